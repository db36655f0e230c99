// The publicRoutes option: validated at register, decided once per route (never per request), on
// whole path segments, and closed unless a predicate says a literal true. A public route gets no
// tenant and no connection: request.db throws there.
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import type { PublicRouteCandidate } from 'fastify-tenant-rls'
import { bearer, buildApp, committedNames, JWT_SECRET, projects, schema, projectsWorld } from './helpers/fixture.js'

const { db, pool, tenantA } = await projectsWorld(t, 2)

function report (app: FastifyInstance, url: string): void {
  app.get(url, async (request) => {
    let db: unknown
    try {
      db = typeof request.db
    } catch (error) {
      db = (error as { code?: unknown }).code
    }
    return { tenantId: request.tenantId, db }
  })
}

t.test('bad publicRoutes fail register with a message that says what to change', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['not an object', ['/docs'], /publicRoutes must be an object/],
    ['a misspelt key', { prefix: ['/docs'] }, /unknown publicRoutes option\(s\) prefix/],
    ['prefixes not an array', { prefixes: '/docs' }, /prefixes must be an array/],
    ['a relative prefix', { prefixes: ['docs'] }, /URL paths such as '\/documentation'/],
    ['a wildcard prefix', { prefixes: ['/docs/*'] }, /no wildcards/],
    ['the root prefix', { prefixes: ['/'] }, /every route public/],
    ['match not a function', { match: '/docs' }, /match must be a function/]
  ]
  for (const [name, publicRoutes, message] of cases) {
    const app = Fastify()
    await app.register(fastifyJwt, { secret: JWT_SECRET })
    const error = await app.register(fastifyTenantRls, { pool, publicRoutes } as never).then(() => null, (error: unknown) => error) as { code?: string, message?: string } | null
    await app.close()
    t.equal(error?.code, 'FST_TENANT_RLS_INVALID_OPTION', `${name}: rejected`)
    t.match(error?.message, message, `${name}: explains itself`)
  }
})

t.test('prefixes match whole path segments; public routes have no tenant and no database', async (t) => {
  const app = await buildApp(t, {
    pool,
    options: { publicRoutes: { prefixes: ['/docs/'] } },
    routes (app) {
      report(app, '/docs')
      report(app, '/docs/json')
      report(app, '/docsy')
    }
  })
  for (const url of ['/docs', '/docs/json']) {
    const res = await app.inject({ url })
    t.equal(res.statusCode, 200, `${url}: public`)
    t.same(res.json(), { tenantId: null, db: 'FST_TENANT_RLS_NO_TENANT_CONTEXT' })
  }
  t.equal((await app.inject({ url: '/docsy' })).statusCode, 401, 'a longer segment is not under the prefix')
  t.same((await app.inject({ url: '/docsy', headers: bearer(app, { tenant_id: tenantA }) })).json(), { tenantId: tenantA, db: 'object' })
})

t.test('match is asked once per route at startup, never per request, and only a literal true opens', async (t) => {
  const asked: PublicRouteCandidate[] = []
  const app = await buildApp(t, {
    pool,
    options: {
      publicRoutes: {
        match (route) {
          asked.push(route)
          // Truthy but not true: must stay closed.
          return route.url === '/metrics' ? true : (route.url === '/almost' ? 'yes' as unknown as boolean : false)
        }
      }
    },
    routes (app) {
      report(app, '/metrics')
      report(app, '/almost')
      app.post('/write', async (request) => {
        await request.db.insert(projects).values({ name: 'written', tenantId: String(request.tenantId) })
        return { ok: true }
      })
    }
  })
  const atStartup = asked.length
  t.same(asked.filter((route) => route.url === '/metrics').map((route) => route.method), ['GET', 'HEAD'], 'GET and its HEAD twin, each once')
  t.equal((await app.inject({ url: '/metrics' })).statusCode, 200)
  t.equal((await app.inject({ url: '/metrics' })).statusCode, 200)
  t.equal((await app.inject({ url: '/almost' })).statusCode, 401, "'yes' is not true")
  t.equal((await app.inject({ method: 'POST', url: '/write', headers: bearer(app, { tenant_id: tenantA }) })).statusCode, 200)
  t.equal(asked.length, atStartup, 'no call per request')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'written'])
})

t.test('a predicate that throws fails startup, not a request', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, { pool, publicRoutes: { match () { throw new Error('bad predicate') } } })
  app.register(async function routes (scope) { scope.get('/x', async () => ({})) })
  await t.rejects(async () => { await app.ready() }, { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /publicRoutes.match threw for GET \/x: bad predicate/ })
})

t.test('a route declared before the plugin is decided on its first request, once', async (t) => {
  let calls = 0
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(async function early (scope) { report(scope, '/early/health') })
  await app.register(fastifyTenantRls, {
    pool,
    schema,
    publicRoutes: { match (route) { calls++; return route.url === '/early/health' } }
  })
  await app.ready()
  t.equal((await app.inject({ url: '/early/health' })).statusCode, 200)
  t.equal((await app.inject({ url: '/early/health' })).statusCode, 200)
  t.equal(calls, 1, 'one call for the route')
})

t.test('OPTIONS-only routes are public; a route that also answers GET is not', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.options('/preflight', async (request) => ({ tenantId: request.tenantId }))
      app.route({ method: ['GET', 'OPTIONS'], url: '/both', handler: async () => ({}) })
    }
  })
  t.equal((await app.inject({ method: 'OPTIONS', url: '/preflight' })).statusCode, 200)
  t.equal((await app.inject({ method: 'OPTIONS', url: '/both' })).statusCode, 401)
})
