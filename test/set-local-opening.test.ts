// openWith: 'set-local' (issue 14, Citus): the tenant is set with SET LOCAL instead of set_config,
// on plain PostgreSQL. Still one round trip with the first query, still transaction-local, the id
// written into SQL text only after it is proved canonical, the per-tenant statement never prepared
// under a name, and the option refused where it cannot hold. The isolation attacks run in this mode
// in test/adversarial/isolation.test.ts.
import fastifyJwt from '@fastify/jwt'
import { sql } from 'drizzle-orm'
import Fastify from 'fastify'
import t from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import { tenantStatusSql } from 'fastify-tenant-rls/schema'
import { withTenant } from 'fastify-tenant-rls'
import { setLocalStatements } from '../src/citus/set-local.js'
import { TenantTransaction } from '../src/tenant-transaction.js'
import { JWT_SECRET, bearer, buildApp, projects, projectsWorld } from './helpers/fixture.js'
import { recordParses, watchWireTraffic } from './helpers/wire-traffic.js'

const { db, pool, tenantA, tenantB } = await projectsWorld(t, 2)
const traffic = watchWireTraffic(pool)
await db.asOwner(`
  CREATE TABLE audit_log (entry text NOT NULL);
  GRANT SELECT, INSERT ON audit_log TO ${db.appRole};
`)

const SETTINGS_TEXT = "SELECT current_setting('app.current_tenant_id', true) AS tenant, current_setting('citus.propagate_set_commands', true) AS propagate"
const SETTINGS_SQL = sql.raw(SETTINGS_TEXT)
const app = await buildApp(t, {
  pool,
  options: { openWith: 'set-local' },
  routes (app) {
    app.get('/names', async (request) => (await request.db.select({ name: projects.name }).from(projects).orderBy(projects.name)).map((row) => row.name))
    app.get('/settings', async (request) => (await request.db.execute(SETTINGS_SQL)).rows[0])
    app.get('/fails', async (request) => {
      await request.db.select({ name: projects.name }).from(projects)
      throw new Error('rolled back')
    })
    app.get('/other-first', async (request) => {
      await request.db.execute(sql.raw('DO $$ BEGIN END $$'))
      return (await request.db.select({ name: projects.name }).from(projects)).length
    })
  }
})
const as = (tenantId: unknown): { authorization: string } => bearer(app, { tenant_id: tenantId })

t.beforeEach(() => { traffic.reset() })

t.test('each tenant sees its own rows; the opening rides with the first query: two round trips', async (t) => {
  t.same((await app.inject({ url: '/names', headers: as(tenantA) })).json(), ['a-1', 'a-2'])
  const seen = traffic.read()
  t.equal(seen.roundTrips, 2)
  t.same(seen.commands, [
    'BEGIN', 'SET', 'SET', 'SELECT 1', 'SELECT 2',
    'SELECT 1', 'COMMIT',
    'SELECT 1', 'CLOSE CURSOR ALL', 'SET', 'RESET', 'UNLISTEN', 'DISCARD TEMP', 'DISCARD SEQUENCES'
  ], 'BEGIN, the two SET LOCALs, the read-back, then the route query; the closing as in set_config mode')
  t.same((await app.inject({ url: '/names', headers: as(tenantB) })).json(), ['b-1'])
})

t.test('inside the transaction: the tenant and citus.propagate_set_commands are set; after COMMIT and after ROLLBACK the connection has neither', async (t) => {
  const single = db.appPool({ max: 1 })
  const withPid = `${SETTINGS_TEXT}, pg_backend_pid() AS pid`
  const singleApp = await buildApp(t, {
    pool: single,
    options: { openWith: 'set-local' },
    routes (app) {
      app.get('/settings', async (request) => (await request.db.execute(sql.raw(withPid))).rows[0])
      app.get('/fails', async (request) => {
        await request.db.execute(SETTINGS_SQL)
        throw new Error('rolled back')
      })
    }
  })
  const res = await singleApp.inject({ url: '/settings', headers: bearer(singleApp, { tenant_id: tenantA }) })
  const { pid, ...inside } = res.json()
  t.same(inside, { tenant: tenantA, propagate: 'local' })
  // The pool holds one connection: what it reports now is what the next request would inherit. The
  // pid proves it is the same connection (a session-level value would have it destroyed instead).
  const after = async (): Promise<unknown> => (await single.query(withPid)).rows[0]
  t.same(await after(), { tenant: '', propagate: '', pid }, 'after COMMIT, on the same connection: no tenant, no propagation setting (placeholders read as empty)')
  t.equal((await singleApp.inject({ url: '/fails', headers: bearer(singleApp, { tenant_id: tenantB }) })).statusCode, 500)
  t.same(await after(), { tenant: '', propagate: '', pid }, 'after ROLLBACK: the same')
  await db.assertNoLeaks(t, single)
})

t.test('a rolled-back request commits nothing, and another tenant is never seen', async (t) => {
  t.equal((await app.inject({ url: '/fails', headers: as(tenantA) })).statusCode, 500)
  t.same((await app.inject({ url: '/settings', headers: as(tenantB) })).json(), { tenant: tenantB, propagate: 'local' })
})

t.test('a statement other than a plain query first: the role catalogs are counted at the right position, the DO riding with the opening', async (t) => {
  const res = await app.inject({ url: '/other-first', headers: as(tenantA) })
  t.equal(res.statusCode, 200)
  t.equal(res.json(), 2)
  const seen = traffic.read()
  t.equal(seen.roundTrips, 3, 'opening + count + DO, the select, then the closing')
  t.same(seen.commands.slice(0, 6), ['BEGIN', 'SET', 'SET', 'SELECT 1', 'SELECT 1', 'DO'])
})

t.test('the per-tenant SET LOCAL is parsed unnamed on every request; the fixed statements are prepared once; no prepared statement holds a tenant id', async (t) => {
  const single = db.appPool({ max: 1 })
  const parses = recordParses(single)
  const preparedApp = await buildApp(t, {
    pool: single,
    options: { openWith: 'set-local' },
    routes (app) {
      app.get('/prepared', async (request) => (await request.db.execute(sql`SELECT statement FROM pg_prepared_statements`)).rows.map((row) => String(row.statement)))
    }
  })
  let prepared: string[] = []
  for (const tenant of [tenantA, tenantB, tenantA]) {
    const res = await preparedApp.inject({ url: '/prepared', headers: bearer(preparedApp, { tenant_id: tenant }) })
    t.equal(res.statusCode, 200)
    prepared = res.json()
  }
  const tenantParses = parses.filter((parse) => parse.text.includes(tenantA) || parse.text.includes(tenantB))
  t.same(tenantParses.map((parse) => parse.text), [
    `SET LOCAL "app"."current_tenant_id" TO '${tenantA}'`,
    `SET LOCAL "app"."current_tenant_id" TO '${tenantB}'`,
    `SET LOCAL "app"."current_tenant_id" TO '${tenantA}'`
  ], 'one Parse per request')
  t.ok(tenantParses.every((parse) => parse.name === ''), 'all unnamed')
  t.equal(parses.filter((parse) => parse.text.startsWith('SET LOCAL citus')).length, 1, 'the fixed SET LOCAL is parsed once per connection')
  t.ok(parses.some((parse) => parse.text.startsWith('SET LOCAL citus') && parse.name !== ''), 'under a name')
  t.ok(prepared.length > 0, 'the connection does hold the plugin\'s prepared statements')
  t.same(prepared.filter((text) => text.includes(tenantA) || text.includes(tenantB)), [], 'none of them holds a tenant id')
  await db.assertNoLeaks(t, single)
})

t.test('hostile tenant ids never reach the statement: refused with TENANT_INVALID before a connection is taken', async (t) => {
  const hostile: unknown[] = [
    `${tenantA}'; RESET ROLE; --`,
    "'; RESET ROLE; --",
    `${tenantA.slice(0, 35)}'`,
    `${tenantA.slice(0, 35)}\\`,
    `${tenantA.slice(0, 35)}\u0000`,
    `${tenantA.slice(0, 35)}é`,
    `\u0430${tenantA.slice(1)}`,
    'a'.repeat(100000),
    'E\'\\x27\''
  ]
  for (const id of hostile) {
    const res = await app.inject({ url: '/names', headers: as(id) })
    t.equal(res.statusCode, 403, JSON.stringify(String(id).slice(0, 40)))
    t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_INVALID')
    await t.rejects(withTenant(pool, id as string, async () => 1, { openWith: 'set-local' }), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
  }
  t.equal(traffic.read().checkouts, 0, 'no connection was taken for any of them')
})

t.test('the statement builder checks the id itself, whatever its caller did: a non-canonical id is refused for every type', async (t) => {
  const refused: Array<[string, 'uuid' | 'bigint' | 'slug']> = [
    [tenantA.toUpperCase(), 'uuid'],
    [`${tenantA}'`, 'uuid'],
    ['7\'; RESET ROLE; --', 'bigint'],
    ['07', 'bigint'],
    ['acme\\', 'slug'],
    ["acme'--", 'slug'],
    ['Acme', 'slug'],
    ['a'.repeat(64), 'slug'],
    ['acme', 'uuid']
  ]
  for (const [id, type] of refused) t.throws(() => setLocalStatements('app.current_tenant_id', id, type), { code: 'FST_TENANT_RLS_TENANT_INVALID' }, `${type} ${id.slice(0, 40)}`)
  t.same(setLocalStatements('app.user', '9223372036854775807', 'bigint')[1], { text: 'SET LOCAL "app"."user" TO \'9223372036854775807\'', unnamed: true }, 'a reserved word as a part of the setting name is quoted')
  t.same(setLocalStatements('app.current_tenant_id', 'acme-2', 'slug')[1]?.text, 'SET LOCAL "app"."current_tenant_id" TO \'acme-2\'')
})

t.test('a transaction made around a hostile id (a caller that skipped validation) refuses it before the opening is sent, and releases its connection', async (t) => {
  const single = db.appPool({ max: 1 })
  const wire = watchWireTraffic(single)
  const transaction = new TenantTransaction(single, `${tenantA}'; RESET ROLE; --`, 'app.current_tenant_id', { openWith: 'set-local', tenantIdType: 'uuid' })
  await t.rejects(transaction.query('INSERT INTO audit_log (entry) VALUES ($1)', ['hostile']), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
  await transaction.rollback()
  t.notOk(wire.read().commands.includes('BEGIN'), 'no BEGIN, no SET was sent')
  t.same((await db.admin.query('SELECT entry FROM audit_log')).rows, [], 'nothing was written')
  await db.assertNoLeaks(t, single)
})

t.test('slug and bigint tenants, and a setting whose part is a reserved word, through withTenant', async (t) => {
  for (const [tenantIdType, id] of [['slug', 'acme-corp'], ['bigint', '9223372036854775807']] as const) {
    const seen = await withTenant(pool, id, async (tx) => (await tx.execute(sql`SELECT current_setting('app.user', true) AS tenant`)).rows[0], { openWith: 'set-local', tenantIdType, setting: 'app.user' })
    t.same(seen, { tenant: id }, tenantIdType)
  }
})

t.test('a failed SET LOCAL stops the first query before it runs, and the connection is released', async (t) => {
  // Once plpgsql is loaded its prefix is reserved: SET LOCAL plpgsql.tenant fails after BEGIN.
  const reserving = db.appPool({ max: 1 })
  reserving.on('connect', (client) => { client.query('DO $$ BEGIN END $$').catch(() => {}) })
  const error = await withTenant(reserving, tenantA, async (tx) => {
    await tx.execute(sql`INSERT INTO audit_log (entry) VALUES (${'first query'})`)
  }, { setting: 'plpgsql.tenant', openWith: 'set-local' }).then(() => undefined, (failure: { cause?: { code?: string } }) => failure.cause)
  t.equal(error?.code, '42602', "SET LOCAL's own error: the INSERT was skipped")
  t.same((await db.admin.query('SELECT entry FROM audit_log')).rows, [], 'the first query left nothing behind')
  await db.assertNoLeaks(t, reserving)
})

t.test('the tenant status check and app.withTenant keep working behind the SET LOCAL opening', async (t) => {
  await db.asOwner(tenantStatusSql({ appRole: db.appRole, table: 'public.tenants' }))
  const statusApp = await buildApp(t, {
    pool,
    options: { openWith: 'set-local', tenantStatus: { table: 'public.tenants' } },
    routes (app) {
      app.get('/names', async (request) => (await request.db.select({ name: projects.name }).from(projects)).length)
    }
  })
  t.equal((await statusApp.inject({ url: '/names', headers: bearer(statusApp, { tenant_id: tenantA }) })).json(), 2)
  await db.admin.query("UPDATE tenants SET status = 'suspended' WHERE id = $1", [tenantA])
  t.teardown(() => db.admin.query("UPDATE tenants SET status = 'active'"))
  const refused = await statusApp.inject({ url: '/names', headers: bearer(statusApp, { tenant_id: tenantA }) })
  t.equal(refused.statusCode, 403)
  t.equal(refused.json().code, 'FST_TENANT_RLS_TENANT_SUSPENDED')
  t.equal(await statusApp.withTenant(tenantB, async (tx) => (await tx.select({ name: projects.name }).from(projects)).length), 1)
  await t.rejects(statusApp.withTenant(tenantA, async (tx) => tx.select().from(projects)), { cause: { code: 'FST_TENANT_RLS_TENANT_SUSPENDED' } }, "drizzle's error, with the refusal as its cause")
})

t.test('refused at register where it cannot hold, with a message that says why', async (t) => {
  const register = (options: Record<string, unknown>, routes?: Parameters<typeof buildApp>[1]['routes']): Promise<unknown> =>
    buildApp(t, { pool, options: { openWith: 'set-local', ...options }, ...(routes === undefined ? {} : { routes }) })
  await t.rejects(register({ singleRoundTrip: true }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /singleRoundTrip: SET LOCAL needs the transaction block/ })
  await t.rejects(register({ singleRoundTrip: 'safe-methods' }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /singleRoundTrip/ })
  await t.rejects(register({ signedContext: { keys: [{ id: 'k1', secret: 'x'.repeat(32) }] } }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /backend pid .* a Citus worker runs the query on a backend with another pid/ })
  await t.rejects(register({ settings: () => ({ 'app.user_id': 'u' }) }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /settings: extra settings are set with set_config/ })
  await t.rejects(register({ openWith: 'SET LOCAL' }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /openWith must be 'set-config' or 'set-local', got "SET LOCAL"/ })
  await t.rejects(register({}, (app) => { app.get('/one', { config: { tenant: { singleRoundTrip: true } } }, async () => 'x') }),
    { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /route GET \/one: singleRoundTrip cannot be used with openWith 'set-local'/ })
  await t.rejects(withTenant(pool, tenantA, async () => 1, { openWith: 'set-local', signedContext: { keys: [{ id: 'k1', secret: 'x'.repeat(32) }] } }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /withTenant options: openWith 'set-local' cannot be combined with signedContext/ })
  await t.rejects(withTenant(pool, tenantA, async () => 1, { openWith: 'set-local', settings: { 'app.user_id': 'u' } }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /withTenant options: openWith 'set-local' cannot be combined with settings/ })
  await t.rejects(app.withTenant(tenantA, async () => 1, { settings: { 'app.user_id': 'u' } }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /cannot be combined with settings/ })
  await t.rejects(withTenant(pool, tenantA, async () => 1, { openWith: 'citus' as never }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
  t.equal(traffic.read().checkouts, 0, 'no refusal took a connection')
  // Allowed: singleRoundTrip turned off explicitly, and every option it is not refused with.
  await register({ singleRoundTrip: false, readOnly: 'safe-methods', statementTimeout: 1000 })
})

t.test('at ready, a database with the citus extension opened with set_config gets a warning with its fix; with set-local, none', async (t) => {
  // Citus cannot be installed here: its row in pg_extension is what the check reads, written as the superuser.
  await db.admin.query("INSERT INTO pg_extension (oid, extname, extowner, extnamespace, extrelocatable, extversion) VALUES (4999999, 'citus', 10, 2200, false, 'fake')")
  t.teardown(() => db.admin.query("DELETE FROM pg_extension WHERE extname = 'citus'"))
  const warningsWith = async (options: Record<string, unknown>): Promise<string[]> => {
    const lines: Array<{ level: number, msg: string, fix?: string }> = []
    const started = await buildApp(t, { pool, options, fastify: { logger: { level: 'warn', stream: { write (line: string) { lines.push(JSON.parse(line)) } } } } })
    await started.close()
    return lines.filter((line) => line.level === 40 && line.msg.includes('citus')).map((line) => `${line.msg} | ${String(line.fix)}`)
  }
  const [warning, ...more] = await warningsWith({})
  t.match(warning, /the database has the citus extension, and the plugin sets the tenant with set_config, which Citus does not pass on to its workers/)
  t.match(warning, /\| register the plugin with openWith: 'set-local'/)
  t.same(more, [], 'once')
  t.same(await warningsWith({ openWith: 'set-local' }), [])
  await db.admin.query("DELETE FROM pg_extension WHERE extname = 'citus'")
  t.same(await warningsWith({}), [], 'nothing without the extension')
})

t.test('a route declared before the plugin (its options never seen at registration) that asks for singleRoundTrip is refused at its first query, nothing sent', async (t) => {
  const early = Fastify()
  t.teardown(() => early.close())
  await early.register(fastifyJwt, { secret: JWT_SECRET })
  await early.register(async function routesFirst (app) {
    app.get('/early', { config: { tenant: { singleRoundTrip: true } } }, async (request) => request.db.select({ name: projects.name }).from(projects))
  })
  await early.register(fastifyTenantRls, { pool, openWith: 'set-local' })
  await early.ready()
  traffic.reset()
  const res = await early.inject({ url: '/early', headers: bearer(early, { tenant_id: tenantA }) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_TENANT_RLS_SINGLE_ROUND_TRIP_REFUSED')
  t.equal(traffic.read().checkouts, 0, 'no connection taken')
})
