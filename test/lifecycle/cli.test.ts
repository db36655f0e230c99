// The export, import and erase subcommands: what they print (text and JSON), their exit codes,
// the dry run and its confirmation, progress only on a terminal, and one run of the real binary.
import { execFile } from 'node:child_process'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { runCli } from '../../src/cli/run-cli.js'
import { captureIo as capture } from '../helpers/cli-io.js'
import { createTestDatabase } from '../helpers/database.js'
import { addTenant, committedRows, createLifecycleTables, seedTwoTenants } from '../helpers/lifecycle-world.js'

const db = await createTestDatabase(t)
await createLifecycleTables(db)
const { tenantA, tenantB } = await seedTwoTenants(db, 5)
const folder = await mkdtemp(join(tmpdir(), 'lifecycle-cli-'))
t.teardown(() => rm(folder, { recursive: true, force: true }))

const app = ['--database-url', db.url()]
const admin = ['--database-url', db.adminUrl]

t.test('export, dry run, erase with confirmation, import: the tenant is back', async (t) => {
  const file = join(folder, 'a.export')
  const before = await committedRows(db, tenantA)
  const exported = capture(true)
  t.equal(await runCli(['export', '--tenant', tenantA, '--out', file, ...app], exported.io), 0)
  t.match(exported.out(), new RegExp(`^Exported tenant ${tenantA} to .*a\\.export \\(snapshot .*, PostgreSQL \\d+.*\\)\\n  projects   8 rows  sha256 [0-9a-f]{16}…\\n  a_tasks   16 rows  sha256`))
  t.match(exported.err(), /export: projects \(table 1 of 2\), 0 rows/, 'progress on a terminal')

  const dry = capture()
  t.equal(await runCli(['erase', '--tenant', tenantA, ...admin], dry.io), 0)
  t.equal(dry.out(), `Dry run: erasing tenant ${tenantA} would delete 24 row(s):\n  projects   8 rows\n  a_tasks   16 rows\n  tenants    1 rows (the tenant's own row)\nNothing was deleted. To erase, run again with --confirm ${tenantA}\n`)
  t.same(await committedRows(db, tenantA), before, 'the dry run deleted nothing')

  const wrong = capture()
  t.equal(await runCli(['erase', '--tenant', tenantA, '--confirm', tenantB, ...admin], wrong.io), 2)
  t.match(wrong.err(), /--confirm must repeat the tenant id/)
  t.same(await committedRows(db, tenantA), before)

  const erased = capture()
  t.equal(await runCli(['erase', '--tenant', tenantA, '--confirm', tenantA, '--format', 'json', ...admin], erased.io), 0)
  t.match(JSON.parse(erased.out()), { dryRun: false, total: 24, tenantRow: true })
  t.same(await committedRows(db, tenantA), { tenants: [], projects: [], a_tasks: [] })

  await addTenant(db, tenantA)
  const imported = capture()
  t.equal(await runCli(['import', file, '--tenant', tenantA, ...app], imported.io), 0)
  t.match(imported.out(), /^Imported tenant .* from .*\n {2}projects {3}8 rows\n {2}a_tasks {3}16 rows\n$/)
  t.equal(imported.err(), '', 'no progress when stderr is not a terminal')
  const { tenants: _before, ...rowsBefore } = before
  const { tenants: _after, ...rowsAfter } = await committedRows(db, tenantA)
  t.same(rowsAfter, rowsBefore)

  const again = capture()
  t.equal(await runCli(['import', file, ...app], again.io), 3, 'rows already there: could not run')
  t.match(again.err(), /already has rows here \(projects: 8, a_tasks: 16\)/)
})

t.test('usage mistakes exit 2', async (t) => {
  for (const argv of [['export', '--out', 'x', ...app], ['export', '--tenant', tenantA, ...app], ['import', ...app], ['import', 'a', 'b', ...app], ['erase', ...admin]]) {
    const run = capture()
    t.equal(await runCli(argv, run.io), 2, argv.join(' '))
  }
})

t.test('the installed binary exports (built package)', async (t) => {
  const file = join(folder, 'bin.export')
  const bin = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url))
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, 'export', '--tenant', tenantB, '--out', file, '--format', 'json'], { env: { ...process.env, DATABASE_URL: db.url() } })
  t.match(JSON.parse(stdout), { tenantId: tenantB, tables: [{ name: 'projects', rows: 6 }, { name: 'a_tasks', rows: 12 }] })
  t.equal(stderr, '')
  t.ok((await stat(file)).size > 0)
})
