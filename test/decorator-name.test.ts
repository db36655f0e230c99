// The `decorator` option: another plugin that already decorates request.db makes the default fail
// at register with a message naming the option; under another name both plugins work, and the
// renamed handle is the same tenant transaction (RLS applies, commits on success).
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import t from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import type { TenantDatabase } from 'fastify-tenant-rls'
import { createTestDatabase } from './helpers/database.js'
import { JWT_SECRET, bearer, committedNames, createProjectsTable, projects, schema } from './helpers/fixture.js'

const db = await createTestDatabase(t)
const { tenantA, tenantB } = await createProjectsTable(db)
const pool = db.appPool()
t.afterEach(async (t) => db.assertNoLeaks(t, pool))

// Stands for any plugin with its own request.db (a key-value store, another ORM).
// A plain string: request.db's declared type is the tenant database's in this test program.
const OTHER_NAME: string = 'db'
const otherDbPlugin = fp(async function otherDb (app) {
  app.decorateRequest(OTHER_NAME, { getter () { return 'the other plugin\'s db' } })
}, { name: 'other-db' })

// This test program does not register `decorator: 'tenantDb'` in TenantRlsRegister (that would
// retype every other test file), so it names the property's type here.
function tenantDbOf (request: FastifyRequest): TenantDatabase<typeof schema> {
  return (request as unknown as { tenantDb: TenantDatabase<typeof schema> }).tenantDb
}

// Returns the app in an object: an async function returning the app itself would await it (a
// Fastify instance is thenable) and so boot it before the test can.
async function appWith (options: Record<string, unknown>): Promise<{ app: FastifyInstance }> {
  const app = Fastify()
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(otherDbPlugin)
  app.register(fastifyTenantRls, { pool, schema, ...options } as never)
  t.teardown(() => app.close())
  return { app }
}

t.test('with request.db taken by another plugin, the default name fails register and names the option', async (t) => {
  const { app } = await appWith({})
  await t.rejects(async () => { await app.ready() }, { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /request\.db is already taken .*set the decorator option .*decorator: 'tenantDb'/ })
})

t.test('under decorator: \'tenantDb\' both plugins work, and the handle is the tenant transaction', async (t) => {
  const { app } = await appWith({ decorator: 'tenantDb' })
  app.get('/projects', async (request) => ({
    other: request.db as unknown,
    names: (await tenantDbOf(request).select().from(projects)).map((row) => row.name).sort()
  }))
  app.post('/projects', async (request) => {
    await tenantDbOf(request).insert(projects).values({ tenantId: tenantA, name: 'via-tenantDb' })
    return { ok: true }
  })
  await app.ready()
  const list = await app.inject({ url: '/projects', headers: bearer(app, { tenant_id: tenantB }) })
  t.same(list.json(), { other: 'the other plugin\'s db', names: ['b-1'] }, 'request.db is the other plugin\'s; tenantDb sees only tenant B')
  const created = await app.inject({ method: 'POST', url: '/projects', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(created.statusCode, 200)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'via-tenantDb'], 'committed')
  await db.admin.query("DELETE FROM projects WHERE name = 'via-tenantDb'")
})

t.test('a decorator name that is no identifier, or one Fastify or the plugin already uses, fails register', async (t) => {
  for (const [decorator, message] of [
    ['tenant-db', /decorator must be a property name/],
    [42, /decorator must be a property name/],
    ['body', /request\.body is already taken/],
    ['tenantId', /request\.tenantId is already taken/]
  ] as const) {
    const app = Fastify()
    await app.register(fastifyJwt, { secret: JWT_SECRET })
    const error = await app.register(fastifyTenantRls, { pool, decorator } as never).ready().then(() => null, (error: { code?: string, message?: string }) => error)
    await app.close()
    t.equal(error?.code, 'FST_TENANT_RLS_INVALID_OPTION', `${String(decorator)}: rejected`)
    t.match(error?.message, message, `${String(decorator)}: explains itself`)
  }
})
