// The lifecycle jobs on tables whose policies verify a signed tenant context (createSignedWorld):
// given the plugin's signedContext they sign their transaction and see the tenant's rows; without
// it they see none, as any unsigned transaction does; with a key the database does not hold, none.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { exportTenant, importTenant, tenantChecksums } from 'fastify-tenant-rls'
import { createSignedWorld, newKey, NOTES_PER_TENANT } from './helpers/signed-context.js'

const world = await createSignedWorld(t)
const { db } = world
const pool = db.appPool()
const scope = { pool, tenantId: world.a, tables: ['signed_notes'] }
const rowsOf = async (options: Parameters<typeof tenantChecksums>[0]): Promise<number[]> => (await tenantChecksums(options)).tables.map((table) => table.rows)

t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })

t.test('signed: the job sees the tenant\'s rows; unsigned or with an unknown key it sees none', async (t) => {
  t.same(await rowsOf({ ...scope, signedContext: { keys: [world.key] } }), [NOTES_PER_TENANT])
  t.same(await rowsOf(scope), [0], 'unsigned: the signed policy shows nothing')
  t.same(await rowsOf({ ...scope, signedContext: { keys: [newKey('unknown')] } }), [0])
})

t.test('an export and an import in signed mode carry every row back', async (t) => {
  const folder = await mkdtemp(join(tmpdir(), 'signed-export-'))
  t.teardown(() => rm(folder, { recursive: true, force: true }))
  const signedContext = { keys: [world.key] }
  const manifest = await exportTenant({ ...scope, signedContext, out: join(folder, 'a.export') })
  t.same(manifest.tables.map((table) => table.rows), [NOTES_PER_TENANT])
  const result = await importTenant({ pool, from: join(folder, 'a.export'), replace: true, signedContext })
  t.same(result.tables.map((table) => table.rows), [NOTES_PER_TENANT])
  t.same(await rowsOf({ ...scope, signedContext }), [NOTES_PER_TENANT])
})

t.test('a bad signedContext is refused before any connection', async (t) => {
  await t.rejects(tenantChecksums({ ...scope, signedContext: { keys: [{ id: 'bad id', secret: 'x'.repeat(40) }] } }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
})
