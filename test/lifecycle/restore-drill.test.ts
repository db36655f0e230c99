// restoreDrill (fastify-tenant-rls/testing) on a real database: it passes when the tenant comes
// back byte for byte and the witness tenant is untouched, and it reports, naming the table, a
// restore that changes the tenant's rows or touches another tenant's (here: triggers that fire
// on the import, as real ones do), keeping the export file for the operator.
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { restoreDrill } from 'fastify-tenant-rls/testing'
import { createTestDatabase } from '../helpers/database.js'
import { committedRows, createLifecycleTables, seedTwoTenants } from '../helpers/lifecycle-world.js'

const db = await createTestDatabase(t)
await createLifecycleTables(db)
const { tenantA, tenantB } = await seedTwoTenants(db, 50)
const appPool = db.appPool()
const directory = await mkdtemp(join(tmpdir(), 'drill-test-'))
t.teardown(() => rm(directory, { recursive: true, force: true }))
t.afterEach(async (t) => { await db.assertNoLeaks(t, appPool) })

const drill = (): ReturnType<typeof restoreDrill> => restoreDrill({ appPool, adminPool: db.admin, tenantId: tenantA, otherTenantIds: [tenantB], directory })

t.test('the tenant comes back byte for byte and the other tenant is untouched', async (t) => {
  const before = await committedRows(db, tenantA)
  const report = await drill()
  t.same(report.failures, [])
  t.ok(report.ok)
  t.same(report.tables.map(({ table, exportedRows, restoredRows }) => [table, exportedRows, restoredRows]), [['projects', 53, 53], ['a_tasks', 106, 106]])
  t.ok(report.tables.every(({ exported, restored }) => exported === restored))
  t.same(report.others.map(({ tenantId, table }) => [tenantId, table]), [[tenantB, 'projects'], [tenantB, 'a_tasks']])
  t.same(report.erased?.total, 159, 'the erasure really deleted the rows')
  t.same(await committedRows(db, tenantA), before, 'every row as it was, the tenants row included')
  t.same(await readdir(directory), [], 'the export file is removed after a passing drill')
})

t.test('a restore that changes the tenant\'s rows fails the drill, naming the table', async (t) => {
  await db.asOwner(`
    CREATE FUNCTION touch_notes () RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.notes := 'restored'; RETURN NEW; END $$;
    CREATE TRIGGER touch_notes BEFORE INSERT ON projects FOR EACH ROW EXECUTE FUNCTION touch_notes();
  `)
  t.teardown(() => db.asOwner('DROP FUNCTION touch_notes CASCADE'))
  const report = await drill()
  t.notOk(report.ok)
  t.same(report.failures, ['projects: the restored rows differ from the exported ones (53 row(s) back of 53)'])
  t.ok(report.exportFile !== undefined && (await stat(report.exportFile)).size > 0, 'the export is kept')
})

t.test('a restore that touches another tenant fails the drill', async (t) => {
  // A statistics trigger owned by the superuser, so RLS does not hold it: it writes to tenant B.
  await db.admin.query(`
    CREATE FUNCTION bump_others () RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
      BEGIN UPDATE projects SET budget = budget + 1 WHERE tenant_id = '${tenantB}' AND budget IS NOT NULL; RETURN NULL; END $$;
    CREATE TRIGGER bump_others AFTER INSERT ON a_tasks FOR EACH STATEMENT EXECUTE FUNCTION bump_others();
  `)
  t.teardown(() => db.admin.query('DROP FUNCTION bump_others CASCADE'))
  const report = await drill()
  t.notOk(report.ok)
  t.same(report.failures, [`projects: the rows of tenant ${tenantB} changed during the drill`])
})

t.test('without a witness tenant the drill refuses to start, and erases nothing', async (t) => {
  const before = await committedRows(db, tenantA)
  await t.rejects(restoreDrill({ appPool, adminPool: db.admin, tenantId: tenantA, otherTenantIds: [] }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
  t.same(await committedRows(db, tenantA), before)
})
