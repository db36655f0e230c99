// The lifecycle functions with openWith: 'set-local' (Citus): each job's transaction sets the tenant
// with SET LOCAL (extended protocol, one statement per message) before its usual opening, on plain
// PostgreSQL. The export, the checksums and a whole restore drill (export, erase, import) come out
// exactly as with set_config, the setting ends with the job, and the option is refused with signedContext.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { exportTenant, tenantChecksums } from 'fastify-tenant-rls'
import { restoreDrill } from 'fastify-tenant-rls/testing'
import { runCli } from '../../src/cli/run-cli.js'
import { captureIo as capture } from '../helpers/cli-io.js'
import { createTestDatabase } from '../helpers/database.js'
import { committedRows, createLifecycleTables, seedTwoTenants } from '../helpers/lifecycle-world.js'
import { recordParses } from '../helpers/wire-traffic.js'

const db = await createTestDatabase(t)
await createLifecycleTables(db)
const { tenantA, tenantB } = await seedTwoTenants(db, 50)
// One connection, so that what it carries after a job is what the next job would inherit.
const appPool = db.appPool({ max: 1 })
// Extended-protocol statements leave pg as a Parse message; a simple Query would not appear here.
const parses = recordParses(appPool)
const texts = (): string[] => parses.map((parse) => parse.text)
const directory = await mkdtemp(join(tmpdir(), 'set-local-lifecycle-'))
t.teardown(() => rm(directory, { recursive: true, force: true }))
t.beforeEach(() => { parses.length = 0 })
t.afterEach(async (t) => { await db.assertNoLeaks(t, appPool) })

const SET_A = `SET LOCAL "app"."current_tenant_id" TO '${tenantA}'`

t.test('the export and the checksums read the same rows as with set_config, the tenant set by SET LOCAL', async (t) => {
  const viaSetLocal = await exportTenant({ pool: appPool, tenantId: tenantA, out: join(directory, 'a-set-local'), openWith: 'set-local' })
  t.ok(texts().includes(SET_A), 'the export sent the SET LOCAL, in the extended protocol')
  t.ok(texts().includes("SET LOCAL citus.propagate_set_commands TO 'local'"))
  const viaSetConfig = await exportTenant({ pool: appPool, tenantId: tenantA, out: join(directory, 'a-set-config') })
  const expected = await committedRows(db, tenantA)
  t.same(viaSetLocal.tables.map((table) => table.rows), [expected.projects?.length, expected.a_tasks?.length], 'every row of the tenant')
  t.same(viaSetLocal.tables.map((table) => table.sha256), viaSetConfig.tables.map((table) => table.sha256), 'byte for byte the same as with set_config')
  parses.length = 0
  const checksums = await tenantChecksums({ pool: appPool, tenantId: tenantA, openWith: 'set-local' })
  t.ok(texts().includes(SET_A))
  t.same(checksums.tables.map((table) => table.sha256), viaSetConfig.tables.map((table) => table.sha256))
  const { rows: [left] } = await appPool.query("SELECT current_setting('app.current_tenant_id', true) AS tenant, current_setting('citus.propagate_set_commands', true) AS propagate")
  t.same(left, { tenant: '', propagate: '' }, 'the connection keeps neither after the job')
})

t.test('a restore drill (export, erase, import) passes with the option', async (t) => {
  const before = await committedRows(db, tenantA)
  const report = await restoreDrill({ appPool, adminPool: db.admin, tenantId: tenantA, otherTenantIds: [tenantB], directory, openWith: 'set-local' })
  t.same(report.failures, [])
  t.ok(report.ok)
  t.ok(texts().filter((text) => text === SET_A).length >= 3, 'the export, the checksums and the import each set the tenant with SET LOCAL')
  t.same(await committedRows(db, tenantA), before)
})

t.test('refused with signedContext or an unknown value, before anything is sent', async (t) => {
  await t.rejects(exportTenant({ pool: appPool, tenantId: tenantA, out: join(directory, 'refused'), openWith: 'set-local', signedContext: { keys: [{ id: 'k1', secret: 'x'.repeat(32) }] } }),
    { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /openWith 'set-local' cannot be combined with signedContext/ })
  await t.rejects(tenantChecksums({ pool: appPool, tenantId: tenantA, openWith: 'SET LOCAL' as never }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /openWith must be/ })
  t.same(texts(), [], 'nothing was sent')
})

t.test('the export, import and erase commands take --open-with', async (t) => {
  const file = join(directory, 'cli.export')
  const exported = capture()
  t.equal(await runCli(['export', '--tenant', tenantA, '--out', file, '--open-with', 'set-local', '--format', 'json', '--database-url', db.url()], exported.io), 0, exported.err())
  const viaSetConfig = await tenantChecksums({ pool: appPool, tenantId: tenantA })
  t.same(JSON.parse(exported.out()).tables.map((table: { sha256: string }) => table.sha256), viaSetConfig.tables.map((table) => table.sha256))
  const dry = capture()
  t.equal(await runCli(['erase', '--tenant', tenantA, '--open-with', 'set-local', '--database-url', db.adminUrl], dry.io), 0, dry.err())
  t.match(dry.out(), /^Dry run: erasing tenant .* would delete/)
  const replaced = capture()
  t.equal(await runCli(['import', file, '--replace', '--open-with', 'set-local', '--database-url', db.url()], replaced.io), 0, replaced.err())
  t.match(replaced.out(), /Imported tenant/)
  for (const command of ['export', 'import', 'erase']) {
    const help = capture()
    await runCli([command, '--help'], help.io)
    t.match(help.out(), /--open-with <how> {9}set-config \(default\), or set-local for Citus/, `${command} --help`)
  }
  const refused = capture()
  t.equal(await runCli(['export', '--tenant', tenantA, '--out', join(directory, 'refused'), '--open-with', 'citus', '--database-url', db.url()], refused.io), 3)
  t.match(refused.err(), /openWith must be 'set-config' or 'set-local', got "citus"/)
})
