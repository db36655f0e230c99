// fastify-tenant-rls/testing on a database in signed mode (createSignedWorld: the same rows under
// the signed policy and under the plain one). Given the plugin's signedContext keys the kit signs
// its own openings: the signed table passes, and the plain one fails the forge check (SQL that
// writes B into the setting inside A's signed transaction reads B's row). Without the keys, or
// with a key the database never installed, the signed table shows A nothing and the kit says so.
import t from 'tap'
import { checkTenantIsolation } from 'fastify-tenant-rls/testing'
import type { IsolationReport } from 'fastify-tenant-rls/testing'
import { createSignedWorld, newKey } from './helpers/signed-context.js'

const world = await createSignedWorld(t)
const { db } = world
const appPool = db.appPool()
const options = { appPool, adminPool: db.admin, tables: ['signed_notes', 'plain_notes'] }

const failuresOf = (report: IsolationReport): string[] => report.failures.map((failure) => `${failure.table} ${failure.operation}`).sort()

/** Rows of both notes tables, as the superuser sees them: the kit must leave them as it found them. */
async function committedRows (): Promise<number> {
  const { rows } = await db.admin.query<{ count: number }>('SELECT (SELECT count(*) FROM signed_notes) + (SELECT count(*) FROM plain_notes) + (SELECT count(*) FROM tenants) AS count')
  return Number(rows[0]?.count)
}

t.afterEach(async (t) => { await db.assertNoLeaks(t, appPool) })

t.test('with the keys: the signed table passes, the plain one fails the forge check only', async (t) => {
  const before = await committedRows()
  const report = await checkTenantIsolation({ ...options, signedContext: { keys: [world.key] } })
  t.same(report.tables, ['signed_notes', 'plain_notes'])
  t.same(failuresOf(report), ['plain_notes forge'], report.failures.map((failure) => failure.message).join('\n'))
  t.match(report.failures[0]?.message, /reads B's row: the policy trusts the setting instead of tenant_rls\.current_tenant\(\)/)
  t.equal(await committedRows(), before, 'nothing left behind')
})

t.test('the signed table alone passes', async (t) => {
  const report = await checkTenantIsolation({ ...options, tables: ['signed_notes'], signedContext: { keys: [world.key] } })
  t.same(report.failures, [])
  t.ok(report.ok)
})

t.test('without the keys the signed table shows tenant A nothing, and the kit names the cause', async (t) => {
  const report = await checkTenantIsolation(options)
  t.same(failuresOf(report), ['signed_notes insert', 'signed_notes read'], 'A can neither read nor write its own rows')
  t.match(report.failures.find((failure) => failure.operation === 'read')?.message, /cannot read its own row.*a signed policy needs options\.signedContext/)
})

t.test('a key the database never installed signs nothing it accepts', async (t) => {
  const report = await checkTenantIsolation({ ...options, tables: ['signed_notes'], signedContext: { keys: [newKey('k9')] } })
  t.same(failuresOf(report), ['signed_notes insert', 'signed_notes read'])
  t.match(report.failures.find((failure) => failure.operation === 'read')?.message, /the key not installed\?/)
})

t.test('bad signedContext options are refused before anything is written', async (t) => {
  const before = await committedRows()
  await t.rejects(checkTenantIsolation({ ...options, signedContext: { keys: [{ id: 'short', secret: 'too short' }] } }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /at least 32/ })
  await t.rejects(checkTenantIsolation({ ...options, signedContext: { keys: [] } }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
  t.equal(await committedRows(), before)
})
