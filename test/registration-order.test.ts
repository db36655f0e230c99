// Registration order must not matter. A routes plugin registered before fastify-tenant-rls (the
// usual `app.register(routes)` at the top of a server file, or a third-party plugin) must be
// authenticated, get its tenant and commit, exactly as one registered after. Opted-out routes must
// answer in every layout, and request.db must throw the plugin's error, never be undefined, where a
// route has no tenant (opted out, or outside the plugin's scope). Every case reads back what was
// really committed through the admin pool.
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import t from 'tap'
import type { Test } from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import { bearer, committedNames, JWT_SECRET, projects, schema, projectsWorld } from './helpers/fixture.js'

const { db, pool, tenantA, tenantB } = await projectsWorld(t, 2)

const SEEDED = ['a-1', 'a-2']

function codeOf (read: () => unknown): unknown {
  try {
    return typeof read()
  } catch (error) {
    return (error as { code?: unknown }).code
  }
}

/** POST /<name> writes a row named <name>; GET /<name>/open is opted out and reports what it sees. */
function declareRoutes (scope: FastifyInstance, name: string): void {
  scope.post(`/${name}`, async (request) => {
    await request.db.insert(projects).values({ name, tenantId: String(request.tenantId) })
    return { ok: true }
  })
  scope.get(`/${name}/open`, { config: { tenant: false } }, async (request) => ({ tenantId: request.tenantId, db: codeOf(() => request.db) }))
}

function routesPlugin (name: string) {
  return async function routes (scope: FastifyInstance) { declareRoutes(scope, name) }
}

function newApp (t: Test): FastifyInstance {
  const app = Fastify()
  t.teardown(() => app.close())
  return app
}

/** 401 without a token, committed with one, the opted-out twin open and without a database. */
async function assertTenantScoped (t: Test, app: FastifyInstance, name: string): Promise<void> {
  const anonymous = await app.inject({ method: 'POST', url: `/${name}` })
  t.equal(anonymous.statusCode, 401, `${name}: no token, 401`)
  t.equal(anonymous.json().code, 'FST_TENANT_RLS_UNAUTHENTICATED')
  const res = await app.inject({ method: 'POST', url: `/${name}`, headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(res.statusCode, 200, `${name}: with a token, 200`)
  const open = await app.inject({ url: `/${name}/open` })
  t.equal(open.statusCode, 200, `${name}: the opted-out route answers`)
  t.same(open.json(), { tenantId: null, db: 'FST_TENANT_RLS_NO_TENANT_CONTEXT' }, `${name}: no tenant, and request.db throws the plugin's error`)
}

async function assertCommitted (t: Test, names: string[]): Promise<void> {
  t.same(await committedNames(db, tenantA), [...SEEDED, ...names].sort(), 'each write committed for its tenant')
  t.same(await committedNames(db, tenantB), ['b-1'], 'and nothing for the other tenant')
}

t.test('an encapsulated routes plugin registered before the plugin', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(routesPlugin('early'))
  await app.register(fastifyTenantRls, { pool, schema })
  await app.ready()
  await assertTenantScoped(t, app, 'early')
  await assertCommitted(t, ['early'])
})

t.test('nothing awaited: routes plugins before and after, and root routes before and after', async (t) => {
  const app = newApp(t)
  declareRoutes(app, 'root-first')
  app.register(routesPlugin('plugin-first'))
  app.register(fastifyJwt, { secret: JWT_SECRET })
  app.register(fastifyTenantRls, { pool, schema })
  app.register(routesPlugin('plugin-last'))
  declareRoutes(app, 'root-last')
  await app.ready()
  for (const name of ['root-first', 'plugin-first', 'plugin-last', 'root-last']) await assertTenantScoped(t, app, name)
  await assertCommitted(t, ['plugin-first', 'plugin-last', 'root-first', 'root-last'])
})

t.test('with and without fastify-plugin, before and after', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fp(routesPlugin('fp-before')))
  await app.register(routesPlugin('encapsulated-before'))
  await app.register(fastifyTenantRls, { pool, schema })
  await app.register(fp(routesPlugin('fp-after')))
  await app.register(routesPlugin('encapsulated-after'))
  await app.ready()
  for (const name of ['fp-before', 'encapsulated-before', 'fp-after', 'encapsulated-after']) await assertTenantScoped(t, app, name)
  await assertCommitted(t, ['encapsulated-after', 'encapsulated-before', 'fp-after', 'fp-before'])
})

t.test('nested and sibling contexts created before the plugin', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(async function outer (scope) {
    declareRoutes(scope, 'outer')
    await scope.register(async function inner (nested) {
      // A decoration of its own gives the context its own request class, as many plugins do.
      nested.decorateRequest('innerFlag', false)
      declareRoutes(nested, 'inner')
    })
  })
  await app.register(routesPlugin('sibling'))
  await app.register(fastifyTenantRls, { pool, schema })
  await app.ready()
  for (const name of ['outer', 'inner', 'sibling']) await assertTenantScoped(t, app, name)
  await assertCommitted(t, ['inner', 'outer', 'sibling'])
})

t.test('a route outside the plugin\'s scope: request.db throws the plugin\'s error, tenantId is null', async (t) => {
  const app = newApp(t)
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(routesPlugin('outside-before'))
  await app.register(async function api (scope) {
    await scope.register(fastifyTenantRls, { pool, schema })
    declareRoutes(scope, 'inside')
  }, { prefix: '/api' })
  await app.register(routesPlugin('outside-after'))
  await app.ready()
  await assertTenantScoped(t, app, 'api/inside')
  for (const name of ['outside-before', 'outside-after']) {
    const res = await app.inject({ method: 'POST', url: `/${name}` })
    t.equal(res.statusCode, 500, `${name}: refused`)
    t.equal(res.json().code, 'FST_TENANT_RLS_NO_TENANT_CONTEXT', `${name}: with the plugin's error`)
    t.same((await app.inject({ url: `/${name}/open` })).json(), { tenantId: null, db: 'FST_TENANT_RLS_NO_TENANT_CONTEXT' })
  }
  await assertCommitted(t, ['inside'])
})
