// fastify-tenant-rls/testing: it passes on isolated tables (leaving nothing behind), and it fails,
// naming the table and the operation, on every way a table can be left open: a policy that lets
// reads through, policies that let writes through, RLS not forced, no policy, RLS off.
import pg from 'pg'
import t from 'tap'
import { assertTenantIsolation, checkTenantIsolation, TenantIsolationError } from 'fastify-tenant-rls/testing'
import type { IsolationReport } from 'fastify-tenant-rls/testing'
import { createTestDatabase } from './helpers/database.js'
import { committed, createWorld } from './adversarial/documents.js'

const db = await createTestDatabase(t)
await createWorld(db)
const appPool = db.appPool()
const CURRENT = "tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)"

/** Creates `broken.<name>` with the given RLS statements, owned by the owner role, granted to the app. */
async function brokenTable (name: string, rls: string): Promise<void> {
  await db.asOwner(`
    CREATE TABLE broken.${name} (tenant_id uuid NOT NULL, id serial PRIMARY KEY, label text NOT NULL);
    ${rls.replaceAll('%T', `broken.${name}`)};
    GRANT SELECT, INSERT, UPDATE, DELETE ON broken.${name} TO ${db.appRole};
    GRANT USAGE ON SEQUENCE broken.${name}_id_seq TO ${db.appRole};
  `)
}

await db.admin.query(`CREATE SCHEMA broken AUTHORIZATION ${db.ownerRole}; GRANT USAGE ON SCHEMA broken TO ${db.appRole}`)
await brokenTable('reads_everything', `ALTER TABLE %T ENABLE ROW LEVEL SECURITY; ALTER TABLE %T FORCE ROW LEVEL SECURITY;
  CREATE POLICY p ON %T USING (${CURRENT} OR true)`)
await brokenTable('writes_anywhere', `ALTER TABLE %T ENABLE ROW LEVEL SECURITY; ALTER TABLE %T FORCE ROW LEVEL SECURITY;
  CREATE POLICY r ON %T FOR SELECT USING (${CURRENT});
  CREATE POLICY i ON %T FOR INSERT WITH CHECK (true);
  CREATE POLICY u ON %T FOR UPDATE USING (${CURRENT}) WITH CHECK (true);
  CREATE POLICY d ON %T FOR DELETE USING (true)`)
await brokenTable('not_forced', `ALTER TABLE %T ENABLE ROW LEVEL SECURITY; CREATE POLICY p ON %T USING (${CURRENT}) WITH CHECK (${CURRENT})`)
await brokenTable('no_policy', 'ALTER TABLE %T ENABLE ROW LEVEL SECURITY; ALTER TABLE %T FORCE ROW LEVEL SECURITY')
await brokenTable('rls_off', 'SELECT 1')

const options = { appPool, adminPool: db.admin }
const operationsOf = (report: IsolationReport, table: string): string[] =>
  [...new Set(report.failures.filter((failure) => failure.table === table).map((failure) => failure.operation))].sort()

t.test('isolated tables pass, found from the catalog, and the check leaves no row behind', async (t) => {
  const before = await committed(db)
  const report = await checkTenantIsolation(options)
  t.same(report.failures, [])
  t.same(report.tables, ['documents', 'notes'], 'the parent is seeded before the child that references it')
  t.ok(report.ok)
  t.same(await committed(db), before, 'nothing left behind')
  await db.assertNoLeaks(t, appPool)
})

t.test("the tables' owner works as the privileged pool too, although FORCE'd RLS applies to it", async (t) => {
  // Superuser connections that act as the owner, as a migration role would.
  // The role as a startup setting: a SET ROLE sent on 'connect' would race the pool's first query.
  const ownerPool = new pg.Pool({ connectionString: db.admin.options.connectionString, max: 2, options: `-c role=${db.ownerRole}` })
  t.teardown(() => ownerPool.end())
  const before = await committed(db)
  const report = await checkTenantIsolation({ appPool, adminPool: ownerPool })
  t.same(report.failures, [])
  t.same(await committed(db), before, 'nothing left behind: the owner deleted its rows under their tenant')
})

t.test('every broken table fails, naming the table and the operation', async (t) => {
  const report = await checkTenantIsolation({ ...options, schema: 'broken' })
  t.notOk(report.ok)
  t.same(report.tables, ['broken.no_policy', 'broken.not_forced', 'broken.reads_everything', 'broken.rls_off', 'broken.writes_anywhere'])
  t.same(operationsOf(report, 'broken.reads_everything'), ['delete', 'insert', 'read', 'update'], 'USING (... OR true) doubles as WITH CHECK: everything gets through')
  // The UPDATE and DELETE policies are as permissive, but PostgreSQL still filters the rows they
  // target through the SELECT policy, so only the INSERT gets through.
  t.same(operationsOf(report, 'broken.writes_anywhere'), ['insert'], 'a permissive INSERT policy')
  t.same(operationsOf(report, 'broken.not_forced'), ['structure'])
  t.match(report.failures.find((failure) => failure.table === 'broken.not_forced')?.message, /not forced/)
  t.same(operationsOf(report, 'broken.no_policy'), ['insert', 'read', 'structure'], 'no policy: denied everything, so the kit cannot prove anything either')
  t.match(report.failures.find((failure) => failure.table === 'broken.no_policy' && failure.operation === 'structure')?.message, /no policy/)
  t.same(operationsOf(report, 'broken.rls_off'), ['delete', 'insert', 'read', 'structure', 'update'])
  const { rows } = await db.admin.query('SELECT (SELECT count(*) FROM broken.reads_everything) + (SELECT count(*) FROM broken.writes_anywhere) + (SELECT count(*) FROM broken.rls_off) AS left')
  t.equal(Number(rows[0].left), 0, 'nothing left behind, even by the broken tables')
  await db.assertNoLeaks(t, appPool)
})

t.test('assertTenantIsolation throws a TenantIsolationError whose message names table and operation', async (t) => {
  const error = await assertTenantIsolation({ ...options, tables: ['documents', 'broken.not_forced'] }).then(() => undefined, (thrown: unknown) => thrown)
  t.ok(error instanceof TenantIsolationError)
  t.match((error as Error).message, /broken\.not_forced \[structure\]: row level security is not forced/)
  t.notMatch((error as Error).message, /documents/)
  t.same(await assertTenantIsolation({ ...options, tables: ['notes', 'documents'] }).then((report) => report.ok), true, 'and resolves when every table is isolated')
})

t.test('a column it cannot generate is reported as a seed failure, and options.rows fills it in', async (t) => {
  await db.asOwner(`
    CREATE TABLE broken_points (tenant_id uuid NOT NULL, id serial PRIMARY KEY, at point NOT NULL);
    ALTER TABLE broken_points ENABLE ROW LEVEL SECURITY; ALTER TABLE broken_points FORCE ROW LEVEL SECURITY;
    CREATE POLICY p ON broken_points USING (${CURRENT}) WITH CHECK (${CURRENT});
    GRANT SELECT, INSERT, UPDATE, DELETE ON broken_points TO ${db.appRole}; GRANT USAGE ON SEQUENCE broken_points_id_seq TO ${db.appRole};
  `)
  const without = await checkTenantIsolation({ ...options, tables: ['broken_points'] })
  t.same(without.failures.map((failure) => [failure.table, failure.operation]), [['broken_points', 'seed']])
  t.match(without.failures[0]?.message, /column at \(point\).*options\.rows\['broken_points'\]/)
  const withRows = await checkTenantIsolation({ ...options, tables: ['broken_points'], rows: { broken_points: () => ({ at: '(1,2)' }) } })
  t.same(withRows.failures, [])
  await db.asOwner('DROP TABLE broken_points')
})
