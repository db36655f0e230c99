// Routing by a placement table, on two PostgreSQL servers: each tenant is served from the database
// its row names; a tenant without a row and a row naming a database this process has no pool for
// are refused (never a fallback to `pool`), and a refusal is not remembered; every named pool is
// checked at ready like `pool`; the table's own constraints and grants; the options' checks.
import fastifyJwt from '@fastify/jwt'
import { sql } from 'drizzle-orm'
import Fastify from 'fastify'
import pg from 'pg'
import t from 'tap'
import fastifyTenantRls, { placementRouting } from 'fastify-tenant-rls'
import { placementTableSql } from 'fastify-tenant-rls/schema'
import { JWT_SECRET } from './helpers/fixture.js'
import { askRows, moveWorld, placementApp } from './helpers/move-world.js'

const world = await moveWorld(t)
const { shared, whale } = world
const app = await placementApp(t, world)

t.afterEach(async (t) => {
  await shared.assertNoLeaks(t, world.sharedPool)
  await whale.assertNoLeaks(t, world.whalePool)
})

t.test('each tenant is served from the database its row names', async (t) => {
  const onShared = await world.placeTenant(shared, 2)
  const onWhale = await world.placeTenant(whale, 4)
  // Each tenant's rows exist on its own server only, so its rows prove where it was served from.
  t.same(await askRows(app, onShared), { status: 200, code: undefined, retryAfter: undefined, rows: 5, foreign: 0 })
  t.same(await askRows(app, onWhale), { status: 200, code: undefined, retryAfter: undefined, rows: 7, foreign: 0 })
  const counted = await app.withTenant(onWhale, async (db) => (await db.execute(sql`SELECT count(*)::int AS n, current_setting('port') AS port FROM projects`)).rows)
  const { rows: [port] } = await whale.admin.query<{ port: string }>("SELECT current_setting('port') AS port")
  t.same(counted, [{ n: 7, port: port?.port }], 'app.withTenant too, on the whale server')
})

t.test('a tenant without a placement is refused, and placed later it is served', async (t) => {
  const unplaced = await world.placeTenant(whale, 1)
  await shared.admin.query('DELETE FROM tenant_placements WHERE tenant = $1', [unplaced])
  const refused = await askRows(app, unplaced)
  t.same([refused.status, refused.code, refused.rows], [403, 'FST_TENANT_RLS_TENANT_NOT_PLACED', 0], 'not served from pool, the default database')
  await shared.admin.query("INSERT INTO tenant_placements (tenant, database) VALUES ($1, 'whale')", [unplaced])
  t.equal((await askRows(app, unplaced)).status, 200, 'the refusal was not cached')
})

t.test('a placement naming a database without a pool here is refused', async (t) => {
  const tenantId = await world.placeTenant(shared, 1)
  await shared.admin.query("UPDATE tenant_placements SET database = 'nowhere' WHERE tenant = $1", [tenantId])
  const refused = await askRows(app, tenantId)
  t.same([refused.status, refused.code], [500, 'FST_TENANT_RLS_PLACEMENT_UNKNOWN_DATABASE'])
})

t.test('every named pool is checked at ready like pool: a superuser pool is refused', async (t) => {
  const unsafe = new pg.Pool({ connectionString: whale.adminUrl, max: 1, connectionTimeoutMillis: 2000 })
  t.teardown(() => unsafe.end())
  const refused = Fastify()
  t.teardown(() => refused.close())
  await refused.register(fastifyJwt, { secret: JWT_SECRET })
  await refused.register(fastifyTenantRls, { pool: world.sharedPool, ...placementRouting({ pool: world.directoryPool, pools: { shared: world.sharedPool, whale: unsafe } }) })
  await t.rejects(async () => { await refused.ready() }, { code: 'FST_TENANT_RLS_UNSAFE_ROLE' })
})

t.test('the placement table: database names checked, the reader sees two columns and writes nothing', async (t) => {
  const tenantId = await world.placeTenant(shared, 1)
  await t.rejects(shared.admin.query("UPDATE tenant_placements SET database = 'Not A Name' WHERE tenant = $1", [tenantId]), { code: '23514' })
  await t.rejects(shared.admin.query("UPDATE tenant_placements SET move_step = 'flipped' WHERE tenant = $1", [tenantId]), { code: '23514' }, 'no step without a target')
  await t.rejects(world.directoryPool.query('SELECT move_file FROM tenant_placements'), { code: '42501' })
  await t.rejects(world.directoryPool.query("UPDATE tenant_placements SET database = 'whale'"), { code: '42501' })
  t.match(placementTableSql({ readerRole: 'reader', table: 'routing.placements', tenantIdType: 'bigint' }), /CREATE TABLE "routing"\."placements" \(\n {2}tenant bigint PRIMARY KEY,[^]*GRANT SELECT \(tenant, database\) ON "routing"\."placements" TO "reader";$/)
  t.throws(() => placementTableSql({ readerRole: 'Reader; DROP' }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
})

t.test('options are checked at register time', async (t) => {
  const directory = world.directoryPool
  t.throws(() => placementRouting({ pool: directory, pools: {} }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /at least one database/ })
  t.throws(() => placementRouting({ pool: directory, pools: { 'Big Whale': world.whalePool } }), { message: /"Big Whale" is not a database name/ })
  t.throws(() => placementRouting({ pool: directory, pools: { whale: new pg.Pool() } }), { message: /connectionTimeoutMillis/ })
  t.throws(() => placementRouting({ pool: directory, table: 'placements', pools: { whale: world.whalePool } }), { message: /schema-qualified/ })
  t.throws(() => placementRouting({ pool: undefined as unknown as pg.Pool, pools: { whale: world.whalePool } }), { message: /may read the placement table/ })
  for (const [options, message] of [
    [{ routeCacheMs: 1000 }, /routeCacheMs needs route/],
    [{ route: () => world.whalePool, routeCacheMs: -1 }, /from 0 to 30000/],
    [{ route: () => world.whalePool, routeCacheMs: 60000 }, /from 0 to 30000/],
    [{ route: () => world.whalePool, routeCacheMs: 1.5 }, /from 0 to 30000/]
  ] as const) {
    const refused = Fastify()
    await refused.register(fastifyJwt, { secret: JWT_SECRET })
    await t.rejects(async () => { await refused.register(fastifyTenantRls, { pool: world.sharedPool, ...options }) }, { code: 'FST_TENANT_RLS_INVALID_OPTION', message })
  }
})
