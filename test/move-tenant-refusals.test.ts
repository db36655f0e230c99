// What a move refuses, and what it leaves when it does: a target with other tables, a target that
// already holds the tenant, a tenant placed elsewhere, a move under way to another target, a second
// run while one is running: nothing changed (source active, placement as it was). A write that
// lands on the source after the export stops the move before anything is erased.
import pg from 'pg'
import t from 'tap'
import { moveTenant } from 'fastify-tenant-rls'
import type { MoveStep } from 'fastify-tenant-rls'
import { committedRows, seedTenant } from './helpers/lifecycle-world.js'
import { moveWorld } from './helpers/move-world.js'

const world = await moveWorld(t)
const { shared, whale, source, target } = world

const moveOptions = world.moveOptions

/** The tenant's status on the source and its placement row: what a refused move must leave as it was. */
async function untouched (tenantId: string): Promise<unknown> {
  const { rows: [status] } = await shared.admin.query('SELECT status FROM tenants WHERE id = $1', [tenantId])
  const { rows: [placement] } = await shared.admin.query('SELECT database, move_step, move_target, move_file FROM tenant_placements WHERE tenant = $1', [tenantId])
  return { ...status, ...placement }
}
const asBefore = { status: 'active', database: 'shared', move_step: null, move_target: null, move_file: null }

t.test('a target whose tenant tables differ is refused before anything is marked', async (t) => {
  const tenantId = await world.placeTenant(shared, 2)
  await whale.asOwner('ALTER TABLE projects ADD COLUMN extra text')
  t.teardown(() => whale.asOwner('ALTER TABLE projects DROP COLUMN extra'))
  await t.rejects(moveTenant(moveOptions(tenantId)), { code: 'FST_TENANT_RLS_SCHEMA_MISMATCH', message: /target's tenant tables differ/ })
  t.same(await untouched(tenantId), asBefore)
})

t.test('a target that already holds rows of the tenant is refused', async (t) => {
  const tenantId = await world.placeTenant(shared, 2)
  await seedTenant(whale, tenantId, 1)
  await t.rejects(moveTenant(moveOptions(tenantId)), { code: 'FST_TENANT_RLS_MOVE_REFUSED', message: /already holds tenant .*projects: 4.*public\.tenants: 1/ })
  t.same(await untouched(tenantId), asBefore)
  t.equal((await committedRows(whale, tenantId)).projects?.length, 4, 'its rows there are left alone')
})

t.test('a tenant without a placement, or placed elsewhere, is refused', async (t) => {
  await t.rejects(moveTenant(moveOptions('6f1c1c5e-4a8e-4b6e-9a53-3b8c0c2b7d10')), { code: 'FST_TENANT_RLS_MOVE_REFUSED', message: /has no row in public\.tenant_placements/ })
  const onWhale = await world.placeTenant(whale, 1)
  await t.rejects(moveTenant(moveOptions(onWhale)), { code: 'FST_TENANT_RLS_MOVE_REFUSED', message: /is placed on whale, not on shared/ })
})

t.test('a tenant placed on the source without a tenants row there is refused before the move is recorded', async (t) => {
  const tenantId = await world.placeTenant(shared, 1)
  // The rows go with it (ON DELETE CASCADE): a placement left behind by a deleted tenant.
  await shared.admin.query('DELETE FROM tenants WHERE id = $1', [tenantId])
  await t.rejects(moveTenant(moveOptions(tenantId)), { code: 'FST_TENANT_RLS_MOVE_REFUSED', message: /source's public\.tenants has no row for tenant/ })
  t.same(await untouched(tenantId), { database: 'shared', move_step: null, move_target: null, move_file: null })
})

t.test('a move under way to another target must be resumed with that target', async (t) => {
  const tenantId = await world.placeTenant(shared, 1)
  await shared.admin.query("UPDATE tenant_placements SET move_step = 'started', move_target = 'elsewhere' WHERE tenant = $1", [tenantId])
  await t.rejects(moveTenant(moveOptions(tenantId)), { code: 'FST_TENANT_RLS_MOVE_REFUSED', message: /a move of tenant .* to elsewhere is under way/ })
  t.equal((await untouched(tenantId) as { status: string }).status, 'active')
})

t.test('a second run while one is running is refused, and changes nothing', async (t) => {
  const tenantId = await world.placeTenant(shared, 1)
  // The first run's connection holds the tenant's move lock: the same key moveTenant takes.
  const holder = new pg.Client({ connectionString: shared.adminUrl })
  await holder.connect()
  t.teardown(() => holder.end())
  await holder.query("SELECT pg_advisory_lock(hashtextextended('fastify-tenant-rls move ' || $1, 0))", [tenantId])
  await t.rejects(moveTenant(moveOptions(tenantId)), { code: 'FST_TENANT_RLS_MOVE_REFUSED', message: /another run is moving tenant/ })
  t.same(await untouched(tenantId), asBefore)
  await holder.query('SELECT pg_advisory_unlock_all()')
  await moveTenant(moveOptions(tenantId))
  t.equal((await committedRows(whale, tenantId)).projects?.length, 4, 'moved once the lock is free')
})

t.test('a write on the source after the export: the move exports again instead of losing it', async (t) => {
  const tenantId = await world.placeTenant(shared, 2)
  const late = async (step: MoveStep): Promise<void> => {
    // A transaction that began before the tenant was marked, committing after the export.
    if (step === 'exported') await shared.admin.query("INSERT INTO projects (tenant_id, name) VALUES ($1, 'late write')", [tenantId])
  }
  await t.rejects(moveTenant(moveOptions(tenantId, { onStep: late })), { code: 'FST_TENANT_RLS_MOVE_DIVERGED', message: /source's projects holds 6 row\(s\) of the tenant, the export 5; run the move again/ })
  const { rows: [row] } = await shared.admin.query('SELECT move_step FROM tenant_placements WHERE tenant = $1', [tenantId])
  t.equal(row.move_step, 'marked', 'rewound to export again')
  const report = await moveTenant(moveOptions(tenantId))
  t.same(report.steps[0]?.step, 'exported')
  t.ok((await committedRows(whale, tenantId)).projects?.some((project) => project.includes('late write')), 'the late write moved too')
})

t.test('a write on the source after the flip stops the move before the erasure', async (t) => {
  const tenantId = await world.placeTenant(shared, 2)
  const late = async (step: MoveStep): Promise<void> => {
    if (step === 'drained') await shared.admin.query("INSERT INTO projects (tenant_id, name) VALUES ($1, 'too late')", [tenantId])
  }
  await t.rejects(moveTenant(moveOptions(tenantId, { onStep: late })), { code: 'FST_TENANT_RLS_MOVE_DIVERGED', message: /the target lacks that change/ })
  t.equal((await committedRows(shared, tenantId)).projects?.length, 6, 'nothing erased on the source')
  await t.rejects(moveTenant(moveOptions(tenantId)), { code: 'FST_TENANT_RLS_MOVE_DIVERGED' }, 'a second run refuses too, until someone reconciles')
  // Reconciled by hand (the write copied to the target, here dropped), the move finishes.
  await shared.admin.query("DELETE FROM projects WHERE name = 'too late'")
  const report = await moveTenant(moveOptions(tenantId))
  t.same(report.steps.map(({ step }) => step), ['erasing', 'erased'])
  t.same(await committedRows(shared, tenantId), { tenants: [], projects: [], a_tasks: [] })
})

t.test('options are checked before anything is sent', async (t) => {
  const tenantId = await world.placeTenant(shared, 1)
  await t.rejects(moveTenant(moveOptions(tenantId, { target: { ...target, name: 'Whale!' } })), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /target\.name/ })
  await t.rejects(moveTenant(moveOptions(tenantId, { target: source })), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /same database/ })
  await t.rejects(moveTenant(moveOptions(tenantId, { drainMs: -1 })), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /drainMs/ })
  await t.rejects(moveTenant(moveOptions(tenantId, { placement: {} as never })), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /placement\.pool/ })
  await t.rejects(moveTenant(moveOptions('not-a-tenant')), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
  t.same(await untouched(tenantId), asBefore)
})
