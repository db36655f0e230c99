// withTenant for work outside HTTP (the standalone function for workers, app.withTenant inside the
// app): same tenant rules, commit on resolve, roll back on throw, connection released either way.
import fastifyJwt from '@fastify/jwt'
import { sql } from 'drizzle-orm'
import Fastify from 'fastify'
import pg from 'pg'
import t from 'tap'
import fastifyTenantRls, { withTenant } from 'fastify-tenant-rls'
import { createTestDatabase } from './helpers/database.js'
import { JWT_SECRET, buildApp, committedNames, createProjectsTable, projects, schema } from './helpers/fixture.js'
import { gate } from './helpers/gate.js'

const db = await createTestDatabase(t)
const { tenantA, tenantB } = await createProjectsTable(db)
const pool = db.appPool()
t.afterEach(async (t) => {
  await db.assertNoLeaks(t, pool)
  await db.admin.query("DELETE FROM projects WHERE name NOT IN ('a-1', 'a-2', 'b-1')")
})

t.test('the standalone withTenant sees one tenant and commits when the work resolves', async (t) => {
  const names = await withTenant(pool, tenantB, async (tx) => {
    await tx.insert(projects).values({ tenantId: tenantB, name: 'b-worker' })
    return (await tx.select({ name: projects.name }).from(projects).orderBy(projects.name)).map((row) => row.name)
  }, { schema })
  t.same(names, ['b-1', 'b-worker'])
  t.same(await committedNames(db, tenantB), ['b-1', 'b-worker'])
})

t.test('a schema enables the relational query API', async (t) => {
  const rows = await withTenant(pool, tenantA, async (tx) => tx.query.projects.findMany({ columns: { name: true } }), { schema })
  t.same(rows.map((row) => row.name).sort(), ['a-1', 'a-2'])
})

t.test('a throw rolls back and is rethrown unchanged', async (t) => {
  const failure = new Error('worker failed')
  await t.rejects(withTenant(pool, tenantA, async (tx) => {
    await tx.insert(projects).values({ tenantId: tenantA, name: 'a-worker' })
    throw failure
  }), failure)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
})

t.test('a failed COMMIT rejects with the mapped error', async (t) => {
  await t.rejects(withTenant(pool, tenantA, async (tx) => {
    await tx.insert(projects).values({ tenantId: tenantA, name: 'a-1' })
  }), { code: 'FST_TENANT_RLS_CONFLICT' })
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
})

t.test('the database handle is closed once withTenant returns', async (t) => {
  let leaked: { execute: (query: ReturnType<typeof sql>) => Promise<unknown> } | undefined
  await withTenant(pool, tenantA, async (tx) => { leaked = tx })
  await t.rejects(leaked?.execute(sql`SELECT 1`) ?? Promise.resolve(), { cause: { code: 'FST_TENANT_RLS_TRANSACTION_CLOSED' } })
})

t.test('a tenant id that is not a canonical UUID is refused before any connection', async (t) => {
  let acquired = 0
  const onAcquire = (): void => { acquired++ }
  pool.on('acquire', onAcquire)
  t.teardown(() => { pool.off('acquire', onAcquire) })
  for (const bad of ['', 'acme', `{${tenantA}}`, tenantA.replaceAll('-', ''), null, 42]) {
    await t.rejects(withTenant(pool, bad as string, async () => 'ran'), { code: 'FST_TENANT_RLS_TENANT_INVALID' }, `refuses ${JSON.stringify(bad)}`)
  }
  t.equal(acquired, 0)
})

t.test('the standalone withTenant checks its pool\'s role once, as the plugin does at startup', async (t) => {
  const superuser = new pg.Pool({ connectionString: db.adminUrl, connectionTimeoutMillis: 2000 })
  t.teardown(() => superuser.end())
  await t.rejects(withTenant(superuser, tenantA, async (tx) => tx.select().from(projects)), { code: 'FST_TENANT_RLS_UNSAFE_ROLE' }, 'a superuser pool is refused')

  const other = `${db.appRole}_worker_other`
  await db.admin.query(`CREATE ROLE ${other} NOLOGIN; GRANT ${other} TO ${db.appRole}`)
  t.teardown(() => db.admin.query(`DROP ROLE ${other}`))
  // One use per connection: the role check's connection is gone when the transaction connects.
  const switching = db.appPool({ maxUses: 1 })
  t.equal(await withTenant(switching, tenantA, async (tx) => (await tx.select().from(projects)).length), 2, 'the checked role works')
  switching.on('connect', (client) => { client.query(`SET ROLE ${other}`).catch(() => {}) })
  await t.rejects(withTenant(switching, tenantA, async (tx) => tx.select().from(projects)), { cause: { code: 'FST_TENANT_RLS_UNEXPECTED_ROLE' } }, 'a connection running as another role is refused')
  await db.assertNoLeaks(t, switching)
})

t.test('bad options are refused', async (t) => {
  await t.rejects(withTenant(pool, tenantA, async () => 'ran', { setting: 'nodot' }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
  await t.rejects(withTenant({} as typeof pool, tenantA, async () => 'ran'), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
})

t.test('app.withTenant uses the plugin options, and app.close() rolls back work in flight', async (t) => {
  const app = await buildApp(t, { pool })
  const count = await app.withTenant(tenantA, async (tx) => (await tx.select().from(projects)).length)
  t.equal(count, 2)

  const inside = gate()
  const closed = gate()
  const work = app.withTenant(tenantA, async (tx) => {
    await tx.insert(projects).values({ tenantId: tenantA, name: 'a-closing' })
    inside.open()
    await closed.promise
    await tx.insert(projects).values({ tenantId: tenantA, name: 'a-after-close' })
  })
  const outcome = work.then(() => 'resolved', (error: { code?: string, cause?: { code?: string } }) => error.cause?.code ?? error.code)
  await inside.promise
  await app.close()
  closed.open()
  t.equal(await outcome, 'FST_TENANT_RLS_TRANSACTION_CLOSED')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
})

t.test('app.withTenant before app.ready() checks the pool itself: a superuser pool is refused', async (t) => {
  const superuser = new pg.Pool({ connectionString: db.adminUrl, connectionTimeoutMillis: 2000 })
  t.teardown(() => superuser.end())
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, { pool: superuser, schema })
  let ran = false
  const error = await app.withTenant(tenantA, async (db) => { ran = true; return db.select().from(projects) })
    .then(() => undefined, (failure: { code?: string }) => failure)
  t.equal(error?.code, 'FST_TENANT_RLS_UNSAFE_ROLE')
  t.notOk(ran, 'the work never ran')
})
