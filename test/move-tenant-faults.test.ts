// moveTenant when a connection dies after the move was recorded (failover, an operator ending a
// backend): the import's connection on the target, and the placement connection that holds the
// move's record and lock. The run rejects with the connection's error (the process survives), the
// dead connection is destroyed, the record keeps the last step done, the tenant stays 'moving' on
// the source with all its rows (its requests get 503, never data of a half move), the lock goes with
// the connection, and a second run finishes the move.
import pg from 'pg'
import t from 'tap'
import type { Test } from 'tap'
import { moveTenant } from 'fastify-tenant-rls'
import { checkoutsWork, installDeath, killInserts, releases } from './helpers/backend-death.js'
import { eventually } from './helpers/database.js'
import { committedRows } from './helpers/lifecycle-world.js'
import { askRows, moveWorld, placementApp } from './helpers/move-world.js'

const world = await moveWorld(t)
const { shared, whale } = world
await installDeath(whale, [])
const app = await placementApp(t, world, { routeCacheMs: 0 })

t.afterEach(async (t) => { await world.assertNoLeaks(t) })

const moveOptions = world.moveOptions

/** The placement row, the tenant's status on each side, and its rows on the target. */
async function moveState (tenantId: string): Promise<Record<string, unknown>> {
  const { rows: [placement] } = await shared.admin.query('SELECT database, move_step, move_target FROM tenant_placements WHERE tenant = $1', [tenantId])
  const status = async (db: typeof shared): Promise<string | null> => (await db.admin.query<{ status: string }>('SELECT status FROM tenants WHERE id = $1', [tenantId])).rows[0]?.status ?? null
  return { ...placement, source: await status(shared), target: await status(whale), targetProjects: (await committedRows(whale, tenantId)).projects?.length }
}

/** The tenant's rows in its tables, without its tenants row (whose status the move changes). */
const tenantRows = ({ projects, a_tasks: tasks }: Record<string, string[]>): unknown => ({ projects, tasks })

/** Whether another run could take the tenant's move lock now. */
async function lockIsFree (tenantId: string): Promise<boolean> {
  const { rows: [row] } = await shared.admin.query<{ free: boolean }>("SELECT pg_try_advisory_lock(hashtextextended('fastify-tenant-rls move ' || $1, 0)) AS free", [tenantId])
  if (row?.free === true) await shared.admin.query("SELECT pg_advisory_unlock(hashtextextended('fastify-tenant-rls move ' || $1, 0))", [tenantId])
  return row?.free === true
}

t.test('the import\'s connection dies on the target: 57P01, recorded at exported, source still moving with every row, a second run finishes', async (t: Test) => {
  const moving = await world.placeTenant(shared, 10)
  const rowsBefore = await committedRows(shared, moving)
  const released = releases(world.whalePool)
  await killInserts(t, whale, 'projects', whale.appRole)
  await t.rejects(moveTenant(moveOptions(moving)), { code: '57P01', message: /terminating connection due to administrator command/ })
  t.equal(released.filter((release) => release === 'destroyed').length, 1, 'the import\'s dead connection was released as broken')
  t.same(await moveState(moving), { database: 'shared', move_step: 'exported', move_target: 'whale', source: 'moving', target: 'moving', targetProjects: 0 }, 'the import was undone whole; the record keeps the last step done')
  t.same(tenantRows(await committedRows(shared, moving)), tenantRows(rowsBefore), 'every row still on the source')
  t.match(await askRows(app, moving), { status: 503, code: 'FST_TENANT_RLS_TENANT_MOVING', rows: 0 }, 'its requests are told to retry')
  t.ok(await lockIsFree(moving), 'the lock was released')
  await checkoutsWork(world.whalePool, 2)

  await whale.admin.query('DROP TRIGGER die_on_insert ON projects')
  const report = await moveTenant(moveOptions(moving))
  t.equal(report.resumedFrom, 'exported')
  t.same(await committedRows(whale, moving), rowsBefore, 'all of it on the target')
  t.same(await committedRows(shared, moving), { tenants: [], projects: [], a_tasks: [] }, 'none of it on the source')
})

/** A pool with the one connection that will hold the move's record and lock, named so a test can end its backend. */
function onePlacementConnection (t: Test): pg.Pool {
  const pool = new pg.Pool({ connectionString: shared.adminUrl, max: 1, application_name: 'move-placement' })
  pool.on('error', () => {})
  t.teardown(() => pool.end())
  return pool
}

/** Ends the placement connection's backend, as an operator or a failover would, while the move holds it. */
async function killPlacement (): Promise<void> {
  const { rows: [killed] } = await shared.admin.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'move-placement'")
  await shared.admin.query('SELECT pg_terminate_backend($1)', [killed?.pid])
  await eventually(async () => (await shared.admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [killed?.pid])).rowCount === 0, 'the placement backend to be gone')
}

t.test('the placement connection dies mid-move: the run rejects (the process survives), that connection is destroyed, the lock goes with it, a second run finishes', async (t: Test) => {
  const moving = await world.placeTenant(shared, 10)
  const rowsBefore = await committedRows(shared, moving)
  const placementPool = onePlacementConnection(t)
  const released = releases(placementPool)
  await t.rejects(moveTenant({ ...moveOptions(moving), placement: { pool: placementPool }, async onStep (step) { if (step === 'exported') await killPlacement() } }), { message: /not queryable|Connection terminated/ })
  t.same(released, ['destroyed'], 'the placement connection was released as broken')
  t.same(await moveState(moving), { database: 'shared', move_step: 'exported', move_target: 'whale', source: 'moving', target: 'moving', targetProjects: 10 + 3 }, 'the import ran, its record did not: the record keeps the last step it holds')
  t.same(tenantRows(await committedRows(shared, moving)), tenantRows(rowsBefore), 'every row still on the source')
  t.ok(await lockIsFree(moving), 'the lock went with the connection')

  const report = await moveTenant({ ...moveOptions(moving), placement: { pool: placementPool } })
  t.equal(report.resumedFrom, 'exported', 'the import is done again')
  t.same(await committedRows(whale, moving), rowsBefore, 'all of it on the target, once')
  t.same(await committedRows(shared, moving), { tenants: [], projects: [], a_tasks: [] })
})

t.test('the placement connection dies before a late write is rewound to marked: the run rejects, nothing is erased, the next runs rewind and move the late write too', async (t: Test) => {
  const moving = await world.placeTenant(shared, 2)
  const placementPool = onePlacementConnection(t)
  const released = releases(placementPool)
  await t.rejects(moveTenant({
    ...moveOptions(moving),
    placement: { pool: placementPool },
    async onStep (step) {
      if (step !== 'imported') return
      // A transaction begun before the tenant was marked commits after the export; then the
      // connection that would record the rewind dies.
      await shared.admin.query("INSERT INTO projects (tenant_id, name) VALUES ($1, 'late write')", [moving])
      await killPlacement()
    }
  }), { message: /not queryable|Connection terminated/ }, 'the rewind could not be recorded')
  t.same(released, ['destroyed'])
  t.match(await moveState(moving), { database: 'shared', move_step: 'imported', source: 'moving' }, 'still placed on the source; the record as it was')
  t.equal((await committedRows(shared, moving)).projects?.length, 6, 'nothing erased, the late write kept')
  t.ok(await lockIsFree(moving))

  // The verified step checks again on every run: it finds the late write and rewinds this time.
  await t.rejects(moveTenant({ ...moveOptions(moving), placement: { pool: placementPool } }), { code: 'FST_TENANT_RLS_MOVE_DIVERGED', message: /run the move again to export again/ })
  t.equal((await moveState(moving)).move_step, 'marked')
  const report = await moveTenant({ ...moveOptions(moving), placement: { pool: placementPool } })
  t.same(report.steps[0]?.step, 'exported')
  t.ok((await committedRows(whale, moving)).projects?.some((project) => project.includes('late write')), 'the late write moved too')
  t.same(await committedRows(shared, moving), { tenants: [], projects: [], a_tasks: [] })
})
