// Attacks through the login role every tenant shares, not through rows: tenant A's route ends or
// cancels B's request, passes data to B in a large object, watches B's queries and row counters,
// leaves a temporary table behind. The database starts as a managed PostgreSQL user has it after
// the README's steps (the owner's sharedRoleHardeningSql only: the plugin warns, and the attacks
// work); then the superuser's sharedRoleSuperuserHardeningSql runs and each attack must fail, with
// what really happened read back through the superuser connection.
import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import { sharedRoleSuperuserHardeningSql } from 'fastify-tenant-rls/schema'
import { createTestDatabase, eventually } from '../helpers/database.js'
import { bearer, buildApp, committedNames, createProjectsTable, projects } from '../helpers/fixture.js'
import { gate } from '../helpers/gate.js'
import type { Gate } from '../helpers/gate.js'

const db = await createTestDatabase(t, { superuserHardening: false })
const { tenantA, tenantB } = await createProjectsTable(db)
// Two connections: A's and B's requests run side by side, as on any busy server.
const pool = db.appPool({ max: 2 })

interface Held { pid: Gate<number>, release: Gate }
let held: Held = { pid: gate(), release: gate() }

async function attackApp (t: Test): Promise<FastifyInstance> {
  return buildApp(t, {
    pool,
    routes (app) {
      // B: writes a row, tells the test its backend, then waits (idle in transaction, or in a query).
      app.post<{ Querystring: { busy?: string } }>('/held', async (request) => {
        const { rows: [row] } = await request.db.execute<{ pid: number }>(sql`SELECT pg_backend_pid() AS pid`)
        await request.db.insert(projects).values({ name: `held-${randomUUID()}`, tenantId: String(request.tenantId) })
        held.pid.open(Number(row?.pid))
        if (request.query.busy === 'yes') await request.db.execute(sql`SELECT pg_sleep(1.5)`)
        await held.release.promise
        return 'kept'
      })
      // A: signals another backend of the shared role.
      app.post<{ Querystring: { signal: string, pid: string } }>('/signal', async (request) => {
        const signal = request.query.signal === 'cancel' ? sql`pg_cancel_backend` : sql`pg_terminate_backend`
        const { rows } = await request.db.execute<{ done: boolean }>(sql`SELECT ${signal}(${Number(request.query.pid)}::int) AS done`)
        return rows[0]?.done
      })
      app.post('/large-object', async (request) => {
        const { rows } = await request.db.execute<{ oid: number }>(sql`SELECT lo_from_bytea(0, convert_to('a secret from A', 'UTF8')) AS oid`)
        return rows[0]?.oid
      })
      app.get<{ Querystring: { oid: string } }>('/large-object', async (request) => {
        const { rows } = await request.db.execute<{ text: string }>(sql`SELECT convert_from(lo_get(${Number(request.query.oid)}::oid), 'UTF8') AS text`)
        return rows[0]?.text
      })
      app.get('/activity', async (request) => {
        const { rows } = await request.db.execute<{ query: string }>(sql`SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query ILIKE '%insert into "projects"%'`)
        return rows.map(({ query }) => query)
      })
      app.get('/counters', async (request) => {
        const { rows } = await request.db.execute<{ inserted: string }>(sql`SELECT n_tup_ins AS inserted FROM pg_stat_user_tables WHERE relname = 'projects'`)
        return Number(rows[0]?.inserted)
      })
      app.post('/insert', async (request) => {
        await request.db.insert(projects).values(['x-1', 'x-2', 'x-3'].map((name) => ({ name, tenantId: String(request.tenantId) })))
        return 'inserted'
      })
      app.post('/temp-table', async (request) => {
        await request.db.execute(sql`CREATE TEMP TABLE notes (body text)`)
        await request.db.execute(sql`INSERT INTO notes VALUES ('for the next tenant')`)
        return 'left'
      })
    }
  })
}

const asA = (app: FastifyInstance): { authorization: string } => bearer(app, { tenant_id: tenantA })
const asB = (app: FastifyInstance): { authorization: string } => bearer(app, { tenant_id: tenantB })

/** B's held request, and A's signal sent to its backend at the right moment; both replies. */
async function signalHeldRequest (app: FastifyInstance, signal: 'terminate' | 'cancel'): Promise<{ a: number, b: number }> {
  held = { pid: gate(), release: gate() }
  const bReply = app.inject({ method: 'POST', url: `/held?busy=${signal === 'cancel' ? 'yes' : 'no'}`, headers: asB(app) })
  const pid = await held.pid.promise
  if (signal === 'cancel') {
    // A cancel interrupts only a running statement: wait until B's backend is in its pg_sleep.
    await eventually(async () => (await db.admin.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'", [pid])).rowCount === 1, 'B to be busy')
  }
  const aReply = await app.inject({ method: 'POST', url: `/signal?signal=${signal}&pid=${pid}`, headers: asA(app) })
  held.release.open()
  const b = await bReply
  return { a: aReply.statusCode, b: b.statusCode }
}

const largeObjects = async (): Promise<number> => (await db.admin.query<{ count: number }>('SELECT count(*)::int AS count FROM pg_largeobject_metadata')).rows[0]?.count ?? -1

/** What A's /activity route reads while B's request is held inside its write. */
async function activitySeenWhileBWrites (app: FastifyInstance): Promise<LightMyRequestResponse> {
  held = { pid: gate(), release: gate() }
  const bWriting = app.inject({ method: 'POST', url: '/held', headers: asB(app) })
  await held.pid.promise
  const watched = await app.inject({ url: '/activity', headers: asA(app) })
  held.release.open()
  await bWriting
  return watched
}

t.test('the owner\'s hardening alone (managed PostgreSQL): the plugin warns, and each channel is open', async (t) => {
  const app = await attackApp(t)

  for (const signal of ['terminate', 'cancel'] as const) {
    const before = await committedNames(db, tenantB)
    const { a, b } = await signalHeldRequest(app, signal)
    t.equal(a, 200, `${signal}: A's route signals B's backend`)
    t.equal(b >= 500, true, `${signal}: B's request fails`)
    t.same(await committedNames(db, tenantB), before, `${signal}: B's write is lost`)
  }

  const put = await app.inject({ method: 'POST', url: '/large-object', headers: asA(app) })
  t.equal(put.statusCode, 200, 'A stores a large object')
  const read = await app.inject({ url: `/large-object?oid=${put.body}`, headers: asB(app) })
  t.equal(read.body, 'a secret from A', 'B reads it: large objects have no RLS and the role owns them for every tenant')
  await db.admin.query('SELECT lo_unlink($1::oid)', [Number(put.body)])

  const watched = await activitySeenWhileBWrites(app)
  t.match(watched.json(), [/insert into "projects"/i], 'A reads the query text of B\'s request in pg_stat_activity')

  const counted = Number((await app.inject({ url: '/counters', headers: asA(app) })).body)
  await app.inject({ method: 'POST', url: '/insert', headers: asB(app) })
  // Counters reach the shared statistics when B's backend next goes idle (at most about a second later).
  await eventually(async () => Number((await app.inject({ url: '/counters', headers: asA(app) })).body) >= counted + 3, 'B\'s inserts to show in A\'s counters', 15000)
  t.pass('A counts B\'s inserts in pg_stat_user_tables')
})

t.test('after the superuser\'s hardening each channel is closed', async (t) => {
  // A large object the app role made before the hardening (the role owns it, so it could read it).
  const client = await db.admin.connect()
  const { rows: [kept] } = await client.query<{ oid: number }>(`SET ROLE ${db.appRole}; SELECT lo_from_bytea(0, convert_to('older', 'UTF8'))::int AS oid; RESET ROLE`)
    .then((results) => (results as unknown as Array<{ rows: Array<{ oid: number }> }>)[1] ?? { rows: [] })
  client.release()
  t.teardown(() => db.admin.query('SELECT lo_unlink($1::oid)', [kept?.oid]))
  await db.admin.query(sharedRoleSuperuserHardeningSql())
  const app = await attackApp(t)

  for (const signal of ['terminate', 'cancel'] as const) {
    const { a, b } = await signalHeldRequest(app, signal)
    t.equal(a, 500, `${signal}: A's route is refused (permission denied)`)
    t.equal(b, 200, `${signal}: B's request completes`)
  }

  const objects = await largeObjects()
  const put = await app.inject({ method: 'POST', url: '/large-object', headers: asA(app) })
  t.equal(put.statusCode, 500, 'A cannot create a large object')
  t.equal(await largeObjects(), objects, 'none was created')
  const read = await app.inject({ url: `/large-object?oid=${kept?.oid}`, headers: asB(app) })
  t.equal(read.statusCode, 500, 'nor read one the role already owns')

  const watched = await activitySeenWhileBWrites(app)
  t.equal(watched.statusCode, 500, 'pg_stat_activity is closed to the app role')
  t.equal((await app.inject({ url: '/counters', headers: asA(app) })).statusCode, 500, 'so is pg_stat_user_tables')
  const { rows: [direct] } = await db.admin.query<{ allowed: boolean }>(
    "SELECT has_function_privilege($1, 'pg_stat_get_tuples_inserted(oid)', 'EXECUTE') AS allowed", [db.appRole])
  t.equal(direct?.allowed, false, 'and the functions behind the views')
})

t.test('a route cannot leave a temporary table for the next tenant: the owner\'s hardening took TEMPORARY away', async (t) => {
  const app = await attackApp(t)
  const res = await app.inject({ method: 'POST', url: '/temp-table', headers: asA(app) })
  t.equal(res.statusCode, 500)
  const { rows } = await db.admin.query<{ count: number }>("SELECT count(*)::int AS count FROM pg_class WHERE relpersistence = 't'")
  t.equal(rows[0]?.count, 0, 'no temporary relation exists anywhere')
})

t.afterEach(async (t) => {
  await db.admin.query("DELETE FROM projects WHERE name LIKE 'held-%' OR name LIKE 'x-%'")
  await db.assertNoLeaks(t, pool)
})
