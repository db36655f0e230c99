// exportTenant / importTenant on real PostgreSQL servers: what the file holds (one tenant, parents
// first, one snapshot), that it comes back byte for byte in another database, and every refusal:
// a file that does not match its manifest, a schema that differs, a tenant that already has rows,
// a tampered row of another tenant (refused by WITH CHECK), an unsafe pool. Each refusal is checked
// against what was really committed, read through the superuser.
import { createHash, randomUUID } from 'node:crypto'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { exportTenant, importTenant, tenantChecksums } from 'fastify-tenant-rls'
import type { ExportManifest } from 'fastify-tenant-rls'
import { createTestDatabase } from '../helpers/database.js'
import { addTenant, committedRows, createLifecycleTables, seedTwoTenants } from '../helpers/lifecycle-world.js'

const source = await createTestDatabase(t)
await createLifecycleTables(source)
// 6,000 projects: more than one insert batch (5,000 rows) and many COPY chunks.
const { tenantA, tenantB } = await seedTwoTenants(source, 6000)
const appPool = source.appPool()
const folder = await mkdtemp(join(tmpdir(), 'lifecycle-test-'))
t.teardown(() => rm(folder, { recursive: true, force: true }))
let files = 0
const nextPath = (): string => join(folder, `export-${++files}`)

t.afterEach(async (t) => { await source.assertNoLeaks(t, appPool) })

const exportA = async (): Promise<{ path: string, manifest: ExportManifest }> => {
  const path = nextPath()
  return { path, manifest: await exportTenant({ pool: appPool, tenantId: tenantA, out: path }) }
}

t.test('the export holds every row of the tenant and nothing of another, parents first, as its manifest says', async (t) => {
  const { path, manifest } = await exportA()
  t.same(manifest.tables.map((table) => table.name), ['projects', 'a_tasks'], 'the parent before the child, whatever their names')
  const expected = await committedRows(source, tenantA)
  t.same(manifest.tables.map((table) => table.rows), [expected.projects?.length, expected.a_tasks?.length], 'row counts of every row of the tenant')
  t.same(manifest.tables[0]?.columns.includes('name_length'), false, 'the generated column is left to the server')
  t.equal(manifest.tenantId, tenantA)
  t.match(manifest.serverVersion, /^\d+/)
  t.match(manifest.schemaFingerprint, /^[0-9a-f]{64}$/)
  t.ok(Date.parse(manifest.createdAt) <= Date.now(), 'the snapshot time')
  const text = await readFile(path, 'utf8')
  t.notOk(text.includes(tenantB), 'no byte of tenant B')
  t.same((await tenantChecksums({ pool: appPool, tenantId: tenantA })).tables, manifest.tables, 'the checksums of the database are the file\'s')
})

t.test('the tables are read in one snapshot: a row committed while the export runs is not in it', async (t) => {
  const before = await committedRows(source, tenantA)
  const path = nextPath()
  const manifest = await exportTenant({
    pool: appPool,
    tenantId: tenantA,
    out: path,
    async onProgress ({ table, rows }) {
      // projects is read; a_tasks not yet: a task committed now is after the snapshot.
      if (table === 'a_tasks' && rows === 0) {
        await source.admin.query("INSERT INTO a_tasks (tenant_id, project_id, title) SELECT tenant_id, id, 'late' FROM projects WHERE tenant_id = $1 LIMIT 1", [tenantA])
      }
    }
  })
  t.equal(manifest.tables[1]?.rows, before.a_tasks?.length, 'the late task is not exported')
  await source.admin.query("DELETE FROM a_tasks WHERE title = 'late'")
})

t.test('imported into another database, the tenant comes back byte for byte', async (t) => {
  const target = await createTestDatabase(t)
  await createLifecycleTables(target)
  await addTenant(target, tenantA)
  const targetPool = target.appPool()
  const { path, manifest } = await exportA()
  const progress: string[] = []
  const result = await importTenant({ pool: targetPool, from: path, onProgress: ({ table, tablesDone }) => { progress.push(`${tablesDone}:${table}`) } })
  t.same(result.tables, manifest.tables.map(({ name, rows }) => ({ table: name, rows })))
  t.same(result.replaced, [])
  t.same((await tenantChecksums({ pool: targetPool, tenantId: tenantA })).tables, manifest.tables, 'the same checksums')
  const { tenants: _sourceTenant, ...sourceRows } = await committedRows(source, tenantA)
  const { tenants: _targetTenant, ...targetRows } = await committedRows(target, tenantA)
  t.same(targetRows, sourceRows, 'every row, identity values and the generated column included')
  t.same([...new Set(progress)], ['0:projects', '1:a_tasks'], 'progress named each table in order')
  await target.assertNoLeaks(t, targetPool)
})

t.test('a tenant without its tenants row is refused with the reason, nothing imported', async (t) => {
  const target = await createTestDatabase(t)
  await createLifecycleTables(target)
  const targetPool = target.appPool()
  const { path } = await exportA()
  await t.rejects(importTenant({ pool: targetPool, from: path }), { code: 'FST_TENANT_RLS_IMPORT_REFUSED', message: /tenants table/ })
  const { rows } = await target.admin.query('SELECT count(*)::int AS n FROM projects')
  t.equal(rows[0].n, 0)
  await target.assertNoLeaks(t, targetPool)
})

t.test('rows already there are refused unless replace, which deletes and imports in one transaction', async (t) => {
  const { path, manifest } = await exportA()
  const exported = await committedRows(source, tenantA)
  await t.rejects(importTenant({ pool: appPool, from: path }), { code: 'FST_TENANT_RLS_TENANT_NOT_EMPTY', message: /projects: 6003, a_tasks: 12006/ })
  t.same(await committedRows(source, tenantA), exported, 'nothing changed')

  await source.admin.query("UPDATE projects SET name = 'renamed' WHERE tenant_id = $1 AND name = 'bulk 1'", [tenantA])
  await source.admin.query("DELETE FROM a_tasks WHERE tenant_id = $1 AND title LIKE 'task 1 of%bulk 2'", [tenantA])
  const bBefore = await committedRows(source, tenantB)
  const result = await importTenant({ pool: appPool, from: path, replace: true, tenantId: tenantA.toUpperCase() })
  t.same(result.replaced, [{ table: 'a_tasks', rows: 12005 }, { table: 'projects', rows: 6003 }], 'children deleted first')
  t.same((await tenantChecksums({ pool: appPool, tenantId: tenantA })).tables, manifest.tables, 'back as exported')
  t.same(await committedRows(source, tenantB), bBefore, 'tenant B untouched')
})

t.test('a file of another tenant than the one named is refused', async (t) => {
  const { path } = await exportA()
  await t.rejects(importTenant({ pool: appPool, from: path, tenantId: tenantB, replace: true }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /holds tenant/ })
})

/** Rewrites one table's section of an export with `edit`, and (when asked) the manifest to match. */
async function tamper (path: string, table: string, edit: (lines: string[]) => string[], fixManifest: boolean): Promise<string> {
  const lines = (await readFile(path, 'utf8')).split('\n')
  const start = lines.findIndex((line) => line.startsWith('#table ') && JSON.parse(line.slice(7)).name === table) + 1
  const end = lines.indexOf('\\.', start)
  const section = edit(lines.slice(start, end))
  lines.splice(start, end - start, ...section)
  if (fixManifest) {
    const at = lines.findIndex((line) => line.startsWith('#manifest '))
    const manifest = JSON.parse((lines[at] as string).slice(10)) as ExportManifest
    const entry = manifest.tables.find((candidate) => candidate.name === table)
    if (entry !== undefined) {
      entry.rows = section.length
      entry.sha256 = createHash('sha256').update(section.map((line) => `${line}\n`).join('')).digest('hex')
    }
    lines[at] = `#manifest ${JSON.stringify(manifest)}`
  }
  const tampered = nextPath()
  await writeFile(tampered, lines.join('\n'))
  return tampered
}

t.test('a tampered file with a row of another tenant, checksums recomputed, is refused by WITH CHECK: nothing written', async (t) => {
  const { path } = await exportA()
  const intoB = await tamper(path, 'projects', (lines) => [...lines, (lines[5] as string).replace(tenantA, tenantB).replace(/\t\d+\t/, '\t999999\t')], true)
  const a = await committedRows(source, tenantA)
  const b = await committedRows(source, tenantB)
  await t.rejects(importTenant({ pool: appPool, from: intoB, replace: true }), {
    code: 'FST_TENANT_RLS_IMPORT_REFUSED',
    message: /projects: a row is not of tenant .* row-level security policy refused it/
  })
  t.same(await committedRows(source, tenantA), a, 'the replace was rolled back with the import')
  t.same(await committedRows(source, tenantB), b, 'no row for tenant B')
})

t.test('a file that does not match its manifest is refused before a connection is taken', async (t) => {
  const pool = source.appPool()
  let connections = 0
  pool.on('connect', () => { connections++ })
  const { path } = await exportA()
  const changed = await tamper(path, 'a_tasks', (lines) => lines.map((line, index) => index === 3 ? line.replace('task', 'TASK') : line), false)
  await t.rejects(importTenant({ pool, from: changed, replace: true }), { code: 'FST_TENANT_RLS_EXPORT_INVALID', message: /a_tasks: the rows do not match the manifest's checksum/ })
  const dropped = await tamper(path, 'projects', (lines) => lines.slice(1), false)
  await t.rejects(importTenant({ pool, from: dropped, replace: true }), { code: 'FST_TENANT_RLS_EXPORT_INVALID', message: /manifest says 6003 row\(s\), the file holds 6002/ })
  const whole = await readFile(path)
  const truncated = nextPath()
  await writeFile(truncated, whole.subarray(0, Math.floor(whole.length / 2)))
  await t.rejects(importTenant({ pool, from: truncated, replace: true }), { code: 'FST_TENANT_RLS_EXPORT_INVALID', message: /ends before its manifest/ })
  const other = nextPath()
  await writeFile(other, 'id,name\n1,x\n')
  await t.rejects(importTenant({ pool, from: other }), { code: 'FST_TENANT_RLS_EXPORT_INVALID', message: /not an export file/ })
  t.equal(connections, 0, 'none of them reached the database')
  const escaped = await tamper(path, 'projects', (lines) => lines.map((line, index) => index === 0 ? line.replace('tab\\there', 'tab\\x41') : line), true)
  await t.rejects(importTenant({ pool, from: escaped, replace: true }), { code: 'FST_TENANT_RLS_IMPORT_REFUSED', message: /unexpected escape/ })
  t.equal(connections, 1, 'a file whose manifest matches is imported until a row is refused')
})

t.test('a target whose tables differ from the export\'s is refused', async (t) => {
  const target = await createTestDatabase(t)
  await createLifecycleTables(target)
  await addTenant(target, tenantA)
  const targetPool = target.appPool()
  const { path } = await exportA()
  await target.asOwner('ALTER TABLE a_tasks ALTER COLUMN title TYPE text')
  await t.rejects(importTenant({ pool: targetPool, from: path }), { code: 'FST_TENANT_RLS_SCHEMA_MISMATCH', message: /schema fingerprint/ })
  await target.asOwner('ALTER TABLE a_tasks ALTER COLUMN title TYPE varchar(40); ALTER TABLE a_tasks RENAME TO tasks')
  await t.rejects(importTenant({ pool: targetPool, from: path }), { code: 'FST_TENANT_RLS_SCHEMA_MISMATCH', message: /"a_tasks" does not exist/ })
  await target.assertNoLeaks(t, targetPool)
})

t.test('export refuses a pool that bypasses RLS, removes its file, and never overwrites one', async (t) => {
  const path = nextPath()
  await t.rejects(exportTenant({ pool: source.admin, tenantId: tenantA, out: path }), { code: 'FST_TENANT_RLS_UNSAFE_ROLE' })
  await t.rejects(stat(path), { code: 'ENOENT' }, 'no partial file left')
  const failed = nextPath()
  const write = exportTenant({ pool: appPool, tenantId: tenantA, out: failed, onProgress ({ rows }) { if (rows > 0) throw new Error('disk full') } })
  await t.rejects(write, { message: 'disk full' }, 'a failure while COPY is still sending rows')
  await t.rejects(stat(failed), { code: 'ENOENT' }, 'no partial file left after a failure mid-table')
  await writeFile(path, 'keep me')
  await t.rejects(exportTenant({ pool: appPool, tenantId: tenantA, out: path }), { code: 'EEXIST' })
  t.equal(await readFile(path, 'utf8'), 'keep me')
  await t.rejects(exportTenant({ pool: appPool, tenantId: 'not-a-uuid', out: nextPath() }), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
  await t.rejects(exportTenant({ pool: appPool, tenantId: tenantA, out: nextPath(), tables: ['tenants'] }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /no tenant_id column/ })
})

t.test('a tenant with no rows exports empty tables and imports as nothing', async (t) => {
  const empty = randomUUID()
  await addTenant(source, empty)
  const path = nextPath()
  const manifest = await exportTenant({ pool: appPool, tenantId: empty, out: path })
  t.same(manifest.tables.map((table) => table.rows), [0, 0])
  const result = await importTenant({ pool: appPool, from: path })
  t.same(result.tables, [{ table: 'projects', rows: 0 }, { table: 'a_tasks', rows: 0 }])
})
