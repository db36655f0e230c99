// The signed tenant context on the request path: the plugin's opening sets the tenant with its
// signature (same round trip, bound parameters), so routes read their tenant's rows through signed
// policies; route SQL that switches the tenant itself (the savepoint switch of issue 11 among them)
// sees nothing of B under signed policies, while the same route code in the unsigned mode does.
// Also withTenant, singleRoundTrip, and the startup check refusing a database without the mode.
import { eq, sql } from 'drizzle-orm'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import t from 'tap'
import fastifyTenantRls, { withTenant } from 'fastify-tenant-rls'
import { createTestDatabase } from './helpers/database.js'
import { JWT_SECRET, bearer, createProjectsTable, projects } from './helpers/fixture.js'
import { createSignedWorld, newKey, signedNotes } from './helpers/signed-context.js'
import { watchWireTraffic } from './helpers/wire-traffic.js'

const world = await createSignedWorld(t)
const { db, a, b, key } = world
// Signed mode refuses a database where any table the app role reads keeps a plain policy: the
// plain twin goes. The unsigned comparison runs on a database of its own (projects, plain policies).
await db.asOwner('DROP TABLE plain_notes')
// A plain policy that applies only to another role is no concern of the app role's (and its
// startup check): the table stays closed to the app role, which no permissive policy admits.
await db.admin.query('CREATE ROLE signed_test_other NOLOGIN')
t.teardown(async () => { await db.admin.query('DROP OWNED BY signed_test_other; DROP ROLE signed_test_other').catch(() => {}) })
await db.asOwner(`
  CREATE TABLE other_role_notes (tenant_id uuid NOT NULL, body text NOT NULL);
  ALTER TABLE other_role_notes ENABLE ROW LEVEL SECURITY;
  ALTER TABLE other_role_notes FORCE ROW LEVEL SECURITY;
  CREATE POLICY other_role_only ON other_role_notes TO signed_test_other
    USING (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid));
  GRANT SELECT ON other_role_notes TO ${db.appRole};
`)
const pool = db.appPool()
const traffic = watchWireTraffic(pool)
t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })

const plainDb = await createTestDatabase(t)
const plainTenants = await createProjectsTable(plainDb)
const plainPool = plainDb.appPool()

const tenantsIn = (rows: Array<{ tenantId: string }>): string[] => [...new Set(rows.map((row) => row.tenantId))].sort()

// The same route code in both apps: the switch of issue 11 (set B inside a savepoint, read, roll
// the savepoint back so that A is in force again and the pre-commit check passes, answer with what
// was read), and the same with an update.
async function switchingApp (options: Parameters<typeof fastifyTenantRls>[1], table: typeof signedNotes | typeof projects, other: string): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, options)
  app.get('/list', async (request) => tenantsIn(await request.db.select().from(table)))
  app.get('/list-single', { config: { tenant: { singleRoundTrip: true } } }, async (request) => tenantsIn(await request.db.select().from(table)))
  app.get('/savepoint-switch', async (request) => {
    let seen: string[] = []
    await request.db.transaction(async (tx) => {
      await tx.execute(sql`SELECT set_config('app.current_tenant_id', ${other}, true)`)
      seen = tenantsIn(await tx.select().from(table))
      tx.rollback()
    }).catch(() => {})
    return seen
  })
  app.get('/write-other', async (request) => {
    let written = 0
    await request.db.transaction(async (tx) => {
      await tx.execute(sql`SELECT set_config('app.current_tenant_id', ${other}, true)`)
      written = (await tx.update(table).set({ tenantId: sql`tenant_id` }).where(eq(table.tenantId, other)).returning()).length
      tx.rollback()
    }).catch(() => {})
    return written
  })
  t.teardown(() => app.close())
  await app.ready()
  return app
}

const signedApp = await switchingApp({ pool, signedContext: { keys: [key] } }, signedNotes, b)
const plainApp = await switchingApp({ pool: plainPool }, projects, plainTenants.tenantB)
const getSigned = async (url: string): Promise<unknown> => (await signedApp.inject({ url, headers: bearer(signedApp, { tenant_id: a }) })).json()
const getPlain = async (url: string): Promise<unknown> => (await plainApp.inject({ url, headers: bearer(plainApp, { tenant_id: plainTenants.tenantA }) })).json()

t.test('a route reads its own tenant through signed policies, and the opening stays one round trip with the query', async (t) => {
  traffic.reset()
  t.same(await getSigned('/list'), [a])
  const seen = traffic.read()
  t.equal(seen.roundTrips, 2, 'opening + query, then the closing')
  t.same(seen.commands.slice(0, 3), ['BEGIN', 'SELECT 1', 'SELECT 100'])
})

t.test("the savepoint switch reads B's rows in the unsigned mode, and nothing in the signed mode", async (t) => {
  t.same(await getPlain('/savepoint-switch'), [plainTenants.tenantB], 'unsigned: the forged setting is believed')
  t.same(await getSigned('/savepoint-switch'), [], 'signed: the forged setting has no signature')
})

t.test("a forged setting updates B's rows in the unsigned mode, and none in the signed mode", async (t) => {
  t.equal(await getPlain('/write-other'), 1, "unsigned: B's row (the savepoint then undid it)")
  t.equal(await getSigned('/write-other'), 0, 'signed: none')
})

t.test('singleRoundTrip signs its opening too', async (t) => {
  t.same(await getSigned('/list-single'), [a])
})

t.test('withTenant signs its transactions; without the key the same pool sees nothing', async (t) => {
  const read = (tx: Parameters<Parameters<typeof withTenant>[2]>[0]) => tx.select().from(signedNotes).then(tenantsIn)
  t.same(await withTenant(pool, a, read, { signedContext: { keys: [key] } }), [a])
  t.same(await withTenant(pool, a, read), [], 'unsigned: the signed policy denies')
})

t.test('a connection that reports no backend pid is refused before anything is sent, and released', async (t) => {
  const single = db.appPool({ max: 1 })
  const app = await switchingApp({ pool: single, signedContext: { keys: [key] } }, signedNotes, b)
  // After the startup check: a pooler in between would show no pid to sign for.
  const forgetPid = (client: object): void => { delete (client as { processID?: number }).processID }
  single.on('acquire', forgetPid)
  const res = await app.inject({ url: '/list', headers: bearer(app, { tenant_id: a }) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_TENANT_RLS_SIGNED_CONTEXT_UNAVAILABLE')
  single.off('acquire', forgetPid)
  t.same((await app.inject({ url: '/list', headers: bearer(app, { tenant_id: a }) })).json(), [a], 'the next request, on a connection with its pid, works')
  await db.assertNoLeaks(t, single)
})

t.test('a key the database does not hold is refused at startup, with the fix', async (t) => {
  const other = Fastify()
  await other.register(fastifyJwt, { secret: JWT_SECRET })
  await other.register(fastifyTenantRls, { pool, signedContext: { keys: [newKey('k9')] } })
  await t.rejects(async () => { await other.ready() }, { code: 'FST_TENANT_RLS_UNSAFE_ROLE', message: /k9/ })
  await other.close()
})

t.test('the standalone withTenant hands a retiring key the database no longer holds on as a process warning, and runs the work', async (t) => {
  const warnings: Array<{ name: string, code: string | undefined, message: string }> = []
  const onWarning = (warning: Error & { code?: string }): void => { warnings.push({ name: warning.name, code: warning.code, message: warning.message }) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const rows = await withTenant(pool, a, (db) => db.select().from(signedNotes), { signedContext: { keys: [key, newKey('retired')] } })
  t.ok(rows.length > 0, 'signed with the first key: the work sees its rows')
  // process.emitWarning delivers on the next tick.
  await new Promise((resolve) => setImmediate(resolve))
  t.match(warnings, [{ name: 'FastifyTenantRlsWarning', code: 'FST_TENANT_RLS_SIGNED_CONTEXT', message: /no longer accepts the key "retired"/ }])
})

t.test('app.withTenant before ready runs the signed-context check too: a key the database does not hold is refused before the work runs', async (t) => {
  const other = Fastify()
  await other.register(fastifyJwt, { secret: JWT_SECRET })
  await other.register(fastifyTenantRls, { pool, signedContext: { keys: [newKey('k8')] } })
  let ran = false
  await t.rejects(other.withTenant(a, async () => { ran = true }), { code: 'FST_TENANT_RLS_UNSAFE_ROLE', message: /k8/ })
  t.equal(ran, false, 'the work never ran')
  await other.close()
})

t.test('a database whose policies do not use the verifying function is refused at startup when the mode is on', async (t) => {
  const other = Fastify()
  await other.register(fastifyJwt, { secret: JWT_SECRET })
  await other.register(fastifyTenantRls, { pool: plainPool, signedContext: { keys: [key] } })
  // (the plain database has no tenant_rls schema, no function, and plain policies)
  await t.rejects(async () => { await other.ready() }, { code: 'FST_TENANT_RLS_UNSAFE_ROLE', message: /current_tenant/ })
  await other.close()
})
