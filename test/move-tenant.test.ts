// Moving a tenant between two PostgreSQL servers while its requests and another tenant's keep
// arriving: every answer for the moving tenant is its own rows (all of them) or 503 moving, a
// process still routing it to the source gets 503 moving there, the other tenant is always served;
// at the end its rows are on the target byte for byte and nothing of it is left on the source. A
// crash after each step, then a second run, finishes the move. Refusals change nothing.
import t from 'tap'
import { moveTenant, tenantChecksums } from 'fastify-tenant-rls'
import type { MoveStep } from 'fastify-tenant-rls'
import { MOVE_STEPS } from '../src/routing/placement.js'
import { committedRows } from './helpers/lifecycle-world.js'
import { askRows, moveWorld, placementApp, requestLoop } from './helpers/move-world.js'
import type { Answer } from './helpers/move-world.js'

const world = await moveWorld(t)
const { shared, whale } = world
const app = await placementApp(t, world, { routeCacheMs: 0 })

t.afterEach(async (t) => { await world.assertNoLeaks(t) })

const moveOptions = world.moveOptions

async function placementOf (tenantId: string): Promise<Record<string, unknown>> {
  const { rows: [row] } = await shared.admin.query('SELECT database, move_step, move_target FROM tenant_placements WHERE tenant = $1', [tenantId])
  return row
}

async function statusOn (db: typeof shared, tenantId: string): Promise<string | undefined> {
  const { rows: [row] } = await db.admin.query<{ status: string }>('SELECT status FROM tenants WHERE id = $1', [tenantId])
  return row?.status
}

const ownRowsOrMoving = (expected: number) => (answer: Answer): boolean =>
  answer.foreign === 0 && ((answer.status === 200 && answer.rows === expected) || (answer.status === 503 && answer.code === 'FST_TENANT_RLS_TENANT_MOVING' && answer.retryAfter === '2'))

t.test('a tenant moves while its requests and another tenant\'s keep arriving', async (t) => {
  const moving = await world.placeTenant(shared, 200)
  const other = await world.placeTenant(shared, 5)
  const rowsBefore = await committedRows(shared, moving)
  const otherBefore = await tenantChecksums({ pool: world.sharedPool, tenantId: other })
  // A process whose cache still holds the source's placement after the flip (the default 30 s).
  const stale = await placementApp(t, world)
  t.equal((await askRows(stale, moving)).status, 200, 'the stale process has cached the source')

  const movingLoops = [requestLoop(app, moving), requestLoop(app, moving)]
  const otherLoop = requestLoop(app, other)
  const loops = [...movingLoops, otherLoop]
  const afterFlip: Answer[] = []
  const staleAnswers: Answer[] = []
  const report = await moveTenant(moveOptions(moving, {
    async onStep (step) {
      // Requests of both tenants at every step: each begins after the step was recorded.
      await Promise.all(loops.map((loop) => loop.fresh()))
      if (step === 'flipped' || step === 'drained') {
        staleAnswers.push(await askRows(stale, moving))
        const first = await askRows(app, moving)
        afterFlip.push(first)
      }
    }
  }))
  await Promise.all(loops.map((loop) => loop.stop()))

  const answers = movingLoops.flatMap((loop) => loop.answers)
  t.ok(answers.length > 20, `${answers.length} requests of the moving tenant during the move`)
  t.same(answers.filter((answer) => !ownRowsOrMoving(203)(answer)), [], 'each: all 203 of its own rows, or 503 moving with Retry-After')
  t.ok(answers.some((answer) => answer.status === 503), 'some were told to retry while it moved')
  t.same(otherLoop.answers.filter((answer) => answer.status !== 200 || answer.rows !== 8 || answer.foreign !== 0), [], `the other tenant: ${otherLoop.answers.length} requests, all 200 with its own rows`)
  t.same(staleAnswers.map((answer) => [answer.status, answer.code]), [[503, 'FST_TENANT_RLS_TENANT_MOVING'], [503, 'FST_TENANT_RLS_TENANT_MOVING']], 'a stale process routing to the source gets 503 moving, never data')
  t.same(afterFlip.map((answer) => [answer.status, answer.rows]), [[200, 203], [200, 203]], 'a fresh process finds it on the target, open')

  t.same(report.steps.map(({ step }) => step), MOVE_STEPS, 'every step, in order')
  t.equal(report.resumedFrom, null)
  t.same(await committedRows(whale, moving), rowsBefore, 'its rows on the target, as they were')
  t.same(await committedRows(shared, moving), { tenants: [], projects: [], a_tasks: [] }, 'nothing of it left on the source')
  t.same(await placementOf(moving), { database: 'whale', move_step: null, move_target: null }, 'placed on the target, no move under way')
  t.equal(await statusOn(whale, moving), 'active')
  t.same(await tenantChecksums({ pool: world.sharedPool, tenantId: other }), otherBefore, 'the other tenant\'s rows untouched')
  t.same(await askRows(app, moving), { status: 200, code: undefined, retryAfter: undefined, rows: 203, foreign: 0 })
})

// `lost`: the step's work was done but its record was not (a crash between the two): the step is done again.
for (const [crashAfter, lost] of MOVE_STEPS.flatMap((step) => [[step, false], [step, true]] as const)) {
  t.test(`a crash after step ${crashAfter}${lost ? ', its record lost' : ''}: requests stay safe, and a second run finishes the move`, async (t) => {
    const moving = await world.placeTenant(shared, 10)
    const rowsBefore = await committedRows(shared, moving)
    const crash = new Error(`crash after ${crashAfter}`)
    await t.rejects(moveTenant(moveOptions(moving, { onStep (step: MoveStep) { if (step === crashAfter) throw crash } })), crash)
    t.equal((await placementOf(moving)).move_step, crashAfter, 'the step reached is recorded')
    const recorded = lost ? MOVE_STEPS[MOVE_STEPS.indexOf(crashAfter) - 1] ?? null : crashAfter
    if (lost) await shared.admin.query('UPDATE tenant_placements SET move_step = $2, move_target = CASE WHEN $2::text IS NULL THEN NULL ELSE move_target END WHERE tenant = $1', [moving, recorded])
    const meanwhile = await askRows(app, moving)
    t.ok(ownRowsOrMoving(13)(meanwhile), `between the runs: ${meanwhile.status} ${String(meanwhile.code)}`)
    const report = await moveTenant(moveOptions(moving))
    t.equal(report.resumedFrom, recorded)
    t.same(report.steps.map(({ step }) => step), recorded === null ? MOVE_STEPS : MOVE_STEPS.slice(MOVE_STEPS.indexOf(recorded) + 1), 'only the steps left')
    t.same(await committedRows(whale, moving), rowsBefore, 'all of it on the target')
    t.same(await committedRows(shared, moving), { tenants: [], projects: [], a_tasks: [] }, 'none of it on the source')
    t.same(await askRows(app, moving), { status: 200, code: undefined, retryAfter: undefined, rows: 13, foreign: 0 })
  })
}

t.test('the drain waits drainMs after the flip, by the directory\'s clock, before the erasure', async (t) => {
  const moving = await world.placeTenant(shared, 1)
  const erasedAt: number[] = []
  let flippedAt = 0
  await moveTenant(moveOptions(moving, {
    drainMs: 300,
    async onStep (step) {
      if (step === 'flipped') flippedAt = performance.now()
      if (step === 'erased') erasedAt.push(performance.now())
      // Meanwhile the source still answers for the tenant: 'moving', its rows still there.
      if (step === 'drained') t.equal(await statusOn(shared, moving), 'moving')
    }
  }))
  t.ok((erasedAt[0] ?? 0) - flippedAt >= 290, `erased ${Math.round((erasedAt[0] ?? 0) - flippedAt)} ms after the flip`)
})
