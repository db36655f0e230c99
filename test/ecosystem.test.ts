// The README's "Combining with other plugins" recipes, run with the real plugins. Each recipe checks
// what a client sees (public routes open, tenant routes still 401, CORS headers, 429s) and reads
// back through the admin pool what was committed where it writes.
import fastifyCors from '@fastify/cors'
import fastifyJwt from '@fastify/jwt'
import fastifyRateLimit from '@fastify/rate-limit'
import fastifySensible from '@fastify/sensible'
import fastifySwagger from '@fastify/swagger'
import fastifySwaggerUi from '@fastify/swagger-ui'
import fastifyUnderPressure from '@fastify/under-pressure'
import Fastify from 'fastify'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import { bearer, committedNames, JWT_SECRET, projects, schema, projectsWorld } from './helpers/fixture.js'

const { db, pool, tenantA, tenantB } = await projectsWorld(t, 2)

async function insert (request: FastifyRequest, name: string): Promise<{ ok: true }> {
  await request.db.insert(projects).values({ name, tenantId: String(request.tenantId) })
  return { ok: true }
}

function newApp (t: Test): FastifyInstance {
  const app = Fastify()
  t.teardown(() => app.close())
  return app
}

async function projectsRoutes (scope: FastifyInstance): Promise<void> {
  scope.post('/projects/:name', (request) => insert(request, (request.params as { name: string }).name))
}

function write (app: FastifyInstance, url: string, tenantId: string) {
  return app.inject({ method: 'POST', url, headers: bearer(app, { tenant_id: tenantId }) })
}

t.test('swagger + swagger-ui: /documentation open, tenant routes still 401', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  // Registered before the plugin, as usual: their routes live in contexts the plugin joins later.
  await app.register(fastifySwagger, { openapi: { info: { title: 'api', version: '1.0.0' } } })
  await app.register(fastifySwaggerUi, { routePrefix: '/documentation' })
  await app.register(fastifyTenantRls, { pool, schema, publicRoutes: { prefixes: ['/documentation'] } })
  await app.register(projectsRoutes)
  await app.ready()
  const page = await app.inject({ url: '/documentation' })
  t.equal(page.statusCode, 200, 'the UI page without a token')
  t.match(page.body, /swagger/i)
  t.equal((await app.inject({ url: '/documentation/static/swagger-initializer.js' })).statusCode, 200, 'and its assets')
  const spec = await app.inject({ url: '/documentation/json' })
  t.equal(spec.statusCode, 200, 'the OpenAPI document without a token')
  t.ok(spec.json().paths['/projects/{name}'], 'which lists the tenant routes')
  t.equal((await app.inject({ method: 'POST', url: '/projects/x' })).statusCode, 401, 'a tenant route still needs a token')
  t.equal((await write(app, '/projects/documented', tenantA)).statusCode, 200)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'documented'])
})

/** A browser's CORS preflight for a POST to a tenant route: no token. */
const PREFLIGHT = { method: 'OPTIONS', url: '/projects/x', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } } as const

t.test('@fastify/cors registered first: preflights pass, a 401 carries the CORS headers', async (t) => {
  const app = newApp(t)
  await app.register(fastifyCors, { origin: 'https://app.example' })
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, { pool, schema })
  await app.register(projectsRoutes)
  await app.ready()
  const preflight = await app.inject(PREFLIGHT)
  t.equal(preflight.statusCode, 204, 'preflight without a token')
  t.equal(preflight.headers['access-control-allow-origin'], 'https://app.example')
  const denied = await app.inject({ method: 'POST', url: '/projects/x', headers: { origin: 'https://app.example' } })
  t.equal(denied.statusCode, 401)
  t.equal(denied.headers['access-control-allow-origin'], 'https://app.example', 'the browser can read the 401')
  const res = await app.inject({ method: 'POST', url: '/projects/cors', headers: { origin: 'https://app.example', ...bearer(app, { tenant_id: tenantA }) } })
  t.equal(res.statusCode, 200)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'cors'])
})

t.test('@fastify/cors registered after the plugin: its OPTIONS route is public, so preflights still pass', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, { pool, schema })
  await app.register(fastifyCors, { origin: 'https://app.example' })
  await app.register(projectsRoutes)
  await app.ready()
  const preflight = await app.inject(PREFLIGHT)
  t.equal(preflight.statusCode, 204)
  t.equal(preflight.headers['access-control-allow-origin'], 'https://app.example')
  // The README's reason to register cors first: the plugin refused before cors's hook ran.
  const denied = await app.inject({ method: 'POST', url: '/projects/x', headers: { origin: 'https://app.example' } })
  t.equal(denied.statusCode, 401)
  t.equal(denied.headers['access-control-allow-origin'], undefined)
})

t.test('@fastify/rate-limit keyed by tenant: one budget per tenant, unauthenticated traffic never reaches it', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  // Registered even before the plugin: its hook is added to each route (at onRoute), and Fastify
  // runs route-level onRequest hooks after the app's, the plugin's included.
  await app.register(fastifyRateLimit, {
    max: 2,
    timeWindow: 60_000,
    keyGenerator: (request) => request.tenantId ?? request.ip
  })
  await app.register(fastifyTenantRls, { pool, schema })
  await app.register(projectsRoutes)
  await app.ready()
  t.equal((await write(app, '/projects/a-3', tenantA)).statusCode, 200)
  t.equal((await write(app, '/projects/a-4', tenantA)).statusCode, 200)
  const limited = await write(app, '/projects/a-5', tenantA)
  t.equal(limited.statusCode, 429, "tenant A's budget is spent")
  t.equal((await write(app, '/projects/b-2', tenantB)).statusCode, 200, 'tenant B has its own')
  for (let i = 0; i < 3; i++) {
    const anonymous = await app.inject({ method: 'POST', url: '/projects/x' })
    t.equal(anonymous.statusCode, 401, 'no token: refused before the limiter, never a 429')
  }
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'a-3', 'a-4'], 'the 429 committed nothing')
  t.same(await committedNames(db, tenantB), ['b-1', 'b-2'])
})

t.test('@fastify/rate-limit only limits routes declared after it', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, { pool, schema })
  await app.register(projectsRoutes)
  await app.register(fastifyRateLimit, { max: 1, timeWindow: 60_000, keyGenerator: (request) => request.tenantId ?? request.ip })
  await app.ready()
  t.equal((await write(app, '/projects/a-3', tenantA)).statusCode, 200)
  t.equal((await write(app, '/projects/a-4', tenantA)).statusCode, 200, 'no limit: rate-limit never saw the route')
})

t.test('@fastify/under-pressure: /status public', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyUnderPressure, { exposeStatusRoute: '/status' })
  await app.register(fastifyTenantRls, { pool, schema, publicRoutes: { prefixes: ['/status'] } })
  await app.register(projectsRoutes)
  await app.ready()
  const status = await app.inject({ url: '/status' })
  t.equal(status.statusCode, 200)
  t.same(status.json(), { status: 'ok' })
  t.equal((await app.inject({ method: 'POST', url: '/projects/x' })).statusCode, 401)
})

t.test('@fastify/sensible: an httpError thrown after a write rolls it back', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifySensible)
  await app.register(fastifyTenantRls, { pool, schema })
  app.post('/conflict', async (request) => {
    await insert(request, 'conflicting')
    throw app.httpErrors.conflict('that name is taken')
  })
  app.post('/not-found', async (request, reply) => {
    await insert(request, 'missing')
    return reply.notFound()
  })
  await app.ready()
  const conflict = await write(app, '/conflict', tenantA)
  t.equal(conflict.statusCode, 409)
  t.equal(conflict.json().message, 'that name is taken')
  t.equal((await write(app, '/not-found', tenantA)).statusCode, 404)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], 'nothing committed')
})

t.test('prefixes: routes registered under /api', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, { pool, schema })
  await app.register(projectsRoutes, { prefix: '/api' })
  await app.ready()
  t.equal((await app.inject({ method: 'POST', url: '/api/projects/x' })).statusCode, 401)
  t.equal((await write(app, '/api/projects/under-api', tenantA)).statusCode, 200)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'under-api'])
})

t.test('prefixes: the plugin itself inside a prefixed context', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(async function v2 (scope) {
    // Public prefixes are full URLs, the context's prefix included.
    await scope.register(fastifyTenantRls, { pool, schema, publicRoutes: { prefixes: ['/v2/health'] } })
    scope.get('/health', async (request) => ({ tenantId: request.tenantId }))
    await scope.register(projectsRoutes)
  }, { prefix: '/v2' })
  await app.ready()
  t.equal((await app.inject({ method: 'POST', url: '/v2/projects/x' })).statusCode, 401)
  t.equal((await write(app, '/v2/projects/under-v2', tenantB)).statusCode, 200)
  t.same((await app.inject({ url: '/v2/health' })).json(), { tenantId: null })
  t.same(await committedNames(db, tenantB), ['b-1', 'under-v2'])
})
