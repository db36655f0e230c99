// Pooling attacks: connections handed from tenant to tenant as fast as possible, concurrently, on
// fresh connections after the pool grows and after the server kills every backend. Every reply is
// stamped with the setting and the rows the request saw; a single stamp naming another tenant than
// the token is a leak. Shared by the direct run and the PgBouncer run.
import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import type pg from 'pg'
import type { Test } from 'tap'
import { eventually } from '../helpers/database.js'
import type { TestDatabase } from '../helpers/database.js'
import { attackApp, callAs, gate } from './documents.js'
import type { World } from './documents.js'
import { dbOf, stamp } from './isolation-cases.js'
import type { Target } from './targets.js'

/** Calls /stamp as `tenant` and returns a description of every way the reply was wrong. */
async function mismatches (app: FastifyInstance, tenant: string): Promise<string[]> {
  const response = await callAs(app, tenant, 'stamp')
  if (response.statusCode !== 200) return [`status ${response.statusCode} for ${tenant}: ${response.body}`]
  const seen = response.json<{ setting: string, tenants: string[] }>()
  const problems: string[] = []
  if (seen.setting !== tenant) problems.push(`${tenant} ran with setting ${seen.setting}`)
  if (seen.tenants.length !== 1 || seen.tenants[0] !== tenant) problems.push(`${tenant} saw rows of ${seen.tenants.join(', ')}`)
  return problems
}

async function stampApp (t: Test, pool: pg.Pool, hold: () => Promise<void> | undefined = () => undefined): Promise<FastifyInstance> {
  const { app } = await attackApp(t, pool, {
    async stamp (request) {
      const db = dbOf(request)
      const first = await stamp(db)
      // Random interleaving: other requests take and hand back connections in between.
      await delay(Math.floor(Math.random() * 4))
      await hold()
      const second = await stamp(db)
      return first.setting === second.setting && first.tenants.join() === second.tenants.join() ? second : { setting: 'changed mid-request', tenants: [] }
    }
  })
  return app
}

async function appBackends (db: TestDatabase): Promise<number> {
  const { rows } = await db.admin.query<{ count: number }>('SELECT count(*)::int AS count FROM pg_stat_activity WHERE usename = $1', [db.appRole])
  return rows[0]?.count ?? -1
}

export async function runPoolingCases (t: Test, db: TestDatabase, world: World, target: Target): Promise<void> {
  const [a, b] = world.tenants

  await t.test(`${target.name}: a pool of one connection alternating A, B, A, B for 1,000 requests: zero mismatches`, async (t) => {
    const pool = target.pool(t, { max: 1 })
    const app = await stampApp(t, pool)
    const problems: string[] = []
    for (let index = 0; index < 1000; index++) problems.push(...await mismatches(app, index % 2 === 0 ? a : b))
    t.same(problems, [], 'every request saw exactly its own tenant')
    t.equal(pool.totalCount, 1, 'all of them on the one connection')
    await db.assertNoLeaks(t, pool)
  })

  await t.test(`${target.name}: 600 concurrent requests across ten tenants with random delays: zero mismatches`, async (t) => {
    // The requests queue for the pool far longer than the default 2 s: this case is about who sees
    // what, not about capacity (the faults suite covers the 503 of an exhausted pool).
    const pool = target.pool(t, { max: 4, connectionTimeoutMillis: 60_000 })
    const app = await stampApp(t, pool)
    const order = Array.from({ length: 600 }, (_, index) => world.tenants[index % world.tenants.length] as string)
    const problems = (await Promise.all(order.map((tenant) => mismatches(app, tenant)))).flat()
    t.same(problems, [], 'every request saw exactly its own tenant')
    await db.assertNoLeaks(t, pool)
  })

  await t.test(`${target.name}: connections opened when the pool grows carry only their own request's tenant`, async (t) => {
    const pool = target.pool(t, { max: 8 })
    const held = gate()
    let holding = false
    const app = await stampApp(t, pool, () => holding ? held.promise : undefined)
    t.same(await mismatches(app, a), [], 'warm-up on the first connection')
    holding = true
    const burst = world.tenants.slice(0, 8).map((tenant) => mismatches(app, tenant))
    await eventually(() => pool.totalCount === 8 && pool.idleCount === 0, 'the pool to grow to 8 busy connections')
    held.open()
    t.same((await Promise.all(burst)).flat(), [], 'every new connection saw exactly its own tenant')
    await db.assertNoLeaks(t, pool)
  })

  await t.test(`${target.name}: after pg_terminate_backend kills every app connection, new connections are correct`, async (t) => {
    const pool = target.pool(t, { max: 3 })
    // pg reports a dead idle client on the pool itself; like any app, this one must listen, or the
    // process dies. The plugin only guards the clients it has checked out.
    const idleErrors: string[] = []
    pool.on('error', (error) => { idleErrors.push((error as { code?: string }).code ?? error.message) })
    const app = await stampApp(t, pool)
    t.same((await Promise.all(world.tenants.slice(0, 3).map((tenant) => mismatches(app, tenant)))).flat(), [], 'before')
    await db.admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [db.appRole])
    await eventually(async () => await appBackends(db) === 0, 'every app backend to be gone')
    // Directly, the pool drops its dead idle clients; behind PgBouncer the pool keeps its client
    // connections and PgBouncer replaces the server connections.
    if (target.name === 'direct') {
      await eventually(() => pool.totalCount === 0, 'the pool to drop its dead clients')
      t.same(idleErrors, ['57P01', '57P01', '57P01'], 'each idle client reported admin_shutdown')
    }
    const problems: string[] = []
    for (const tenant of [a, b, a, b]) problems.push(...await mismatches(app, tenant))
    t.same(problems, [], 'after')
    await db.assertNoLeaks(t, pool)
  })
}
