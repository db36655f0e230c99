// `connectionString` instead of `pool`: the plugin creates the pool, logs its idle errors, checks
// its role at ready, and ends it on close once in-flight work is rolled back. Exactly one of
// `pool` and `connectionString` is accepted.
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import { createTestDatabase, eventually } from './helpers/database.js'
import { JWT_SECRET, bearer, committedNames, createProjectsTable, projects, schema } from './helpers/fixture.js'
import { gate } from './helpers/gate.js'

const db = await createTestDatabase(t)
const { tenantA } = await createProjectsTable(db)

/** Backends of the app role, seen through the superuser: the owned pool's connections. */
async function appRoleBackends (): Promise<number> {
  const { rows } = await db.admin.query<{ count: number }>('SELECT count(*)::int AS count FROM pg_stat_activity WHERE usename = $1', [db.appRole])
  return rows[0]?.count ?? -1
}

async function ownedPoolApp (t: Test, logs: Array<{ level: number, msg: string }> = [], connectionString = db.url()): Promise<FastifyInstance> {
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { logs.push(JSON.parse(line)) } } } })
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  // idleTimeoutMillis 0: idle connections stay open until the pool ends, so only close() can end them.
  await app.register(fastifyTenantRls, { connectionString, poolConfig: { max: 2, idleTimeoutMillis: 0 }, schema })
  app.get('/projects', async (request) => (await request.db.select().from(projects)).map((row) => row.name).sort())
  t.teardown(() => app.close())
  return app
}

t.test('the plugin creates the pool, serves from it, and ends it on close', async (t) => {
  const app = await ownedPoolApp(t)
  await app.ready()
  const response = await app.inject({ url: '/projects', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(response.statusCode, 200)
  t.same(response.json(), ['a-1', 'a-2'], 'tenant A\'s rows, through RLS')
  t.ok(await appRoleBackends() > 0, 'the pool holds an idle connection of the app role')
  await app.close()
  await eventually(async () => await appRoleBackends() === 0, 'no connection of the app role left after close')
})

t.test('close rolls back work in flight before it ends the pool', async (t) => {
  const app = await ownedPoolApp(t)
  await app.ready()
  const inside = gate()
  const proceed = gate()
  const work = app.withTenant(tenantA, async (tenantDb) => {
    await tenantDb.insert(projects).values({ tenantId: tenantA, name: 'during-close' })
    inside.open()
    await proceed.promise
    await tenantDb.select().from(projects)
  })
  // drizzle wraps the plugin's error: its code is on the cause.
  const failed = work.then(() => null, (error: { cause?: { code?: string } }) => error)
  await inside.promise
  const closed = app.close()
  await eventually(async () => await appRoleBackends() === 0, 'the pool to end once the transaction is rolled back')
  proceed.open()
  await closed
  t.equal((await failed)?.cause?.code, 'FST_TENANT_RLS_TRANSACTION_CLOSED', 'the work\'s next query is refused')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], 'nothing of it was committed')
})

t.test('an idle connection the server drops is logged at warn, and the process carries on', async (t) => {
  const logs: Array<{ level: number, msg: string }> = []
  const app = await ownedPoolApp(t, logs)
  await app.ready()
  await db.admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [db.appRole])
  await eventually(() => logs.some((line) => line.msg.includes('idle connection of the plugin\'s pool failed')), 'the pool error to be logged')
  t.equal(logs.find((line) => line.msg.includes('idle connection'))?.level, 40, 'at warn')
  const response = await app.inject({ url: '/projects', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(response.statusCode, 200, 'the pool replaced the connection')
})

t.test('the owned pool gets the startup role check: a superuser connection string is refused at ready', async (t) => {
  const app = await ownedPoolApp(t, [], db.adminUrl)
  await t.rejects(async () => { await app.ready() }, { code: 'FST_TENANT_RLS_UNSAFE_ROLE' })
})

t.test('exactly one of pool and connectionString, and poolConfig only with connectionString', async (t) => {
  const pool = db.appPool()
  const cases: Array<[string, unknown, RegExp]> = [
    ['both', { pool, connectionString: db.url() }, /either pool .* or connectionString .*not both/],
    ['neither', { schema }, /pool or connectionString is required/],
    ['poolConfig with pool', { pool, poolConfig: { max: 2 } }, /poolConfig applies only to the pool the plugin creates/],
    ['an empty connection string', { connectionString: '' }, /connectionString must be the non-empty connection string/],
    ['poolConfig that is not an object', { connectionString: db.url(), poolConfig: 5 }, /poolConfig must be an object/],
    ['a connection string inside poolConfig', { connectionString: db.url(), poolConfig: { connectionString: db.url() } }, /must not carry a connectionString/],
    ['a pool that would wait forever', { connectionString: db.url(), poolConfig: { connectionTimeoutMillis: 0 } }, /connectionTimeoutMillis/]
  ]
  for (const [name, options, message] of cases) {
    const app = Fastify()
    await app.register(fastifyJwt, { secret: JWT_SECRET })
    const error = await app.register(fastifyTenantRls, options as never).ready().then(() => null, (error: { code?: string, message?: string }) => error)
    await app.close()
    t.equal(error?.code, 'FST_TENANT_RLS_INVALID_OPTION', `${name}: rejected`)
    t.match(error?.message, message, `${name}: explains itself`)
  }
})
