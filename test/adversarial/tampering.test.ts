// Context tampering from route code: tenant A's route rewrites the tenant setting or the role, by
// every means PostgreSQL offers, and plants a row for tenant B. Each case records what the attempt
// achieves inside the transaction today (the route may well see B's rows), and asserts what the
// plugin guarantees: the reply never carries them (500, nothing committed), and no session-level
// state reaches the next request on that connection. Pools of one connection make "the next
// request" land on the same connection whenever the plugin lets it.
import { sql } from 'drizzle-orm'
import type { FastifyRequest } from 'fastify'
import type pg from 'pg'
import t from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { attackApp, callAs, committed, createAuditorRole, createWorld, documents } from './documents.js'
import { dbOf } from './isolation-cases.js'

const db = await createTestDatabase(t)
const { tenants: [a, b] } = await createWorld(db)
const SETTING = 'app.current_tenant_id'

const { auditor, drop } = await createAuditorRole(db)

/** Runs `statements` as A, then plants a row for B and reads what A's transaction can see. */
function tamperer (statements: string[], seen: { tenants?: string[] }) {
  return async function tamper (request: FastifyRequest) {
    const database = dbOf(request)
    for (const statement of statements) await database.execute(sql.raw(statement))
    const rows = await database.selectDistinct({ tenantId: documents.tenantId }).from(documents)
    seen.tenants = rows.map((row) => row.tenantId).sort()
    // In a savepoint: where WITH CHECK refuses the row, A's transaction itself stays usable.
    await database.transaction((savepoint) => savepoint.insert(documents).values({ tenantId: b, code: 'PLANTED', slug: 'planted', body: 'by A' })).catch(() => {})
    return seen.tenants
  }
}

interface SessionState { pid: number, setting: string | null, role: string }

async function sessionOf (pool: pg.Pool): Promise<SessionState> {
  const { rows } = await pool.query<SessionState>('SELECT pg_backend_pid() AS pid, current_setting($1, true) AS setting, current_user AS role', [SETTING])
  return rows[0] as SessionState
}

interface TamperCase {
  name: string
  statements: string[]
  /** What A's transaction could read after the tampering: the tenants of the visible rows. */
  saw: (a: string, b: string) => string[]
  status: number
  code?: string
  /** The SQLSTATE the tampering statement raised, when PostgreSQL refused it. */
  refused?: string
}

const sorted = (...ids: string[]): string[] => ids.sort()
const stillA = (x: string): string[] => [x]

const cases: TamperCase[] = [
  { name: 'SET of the tenant setting reaches B inside the transaction; the commit check refuses', statements: [`SET ${SETTING} = '${'%B%'}'`], saw: (_, y) => [y], status: 500, code: 'FST_TENANT_RLS_TENANT_CONTEXT_CHANGED' },
  { name: 'set_config(..., false) reaches B inside the transaction; the commit check refuses', statements: [`SELECT set_config('${SETTING}', '%B%', false)`], saw: (_, y) => [y], status: 500, code: 'FST_TENANT_RLS_TENANT_CONTEXT_CHANGED' },
  { name: 'set_config(..., true) reaches B inside the transaction; the commit check refuses', statements: [`SELECT set_config('${SETTING}', '%B%', true)`], saw: (_, y) => [y], status: 500, code: 'FST_TENANT_RLS_TENANT_CONTEXT_CHANGED' },
  { name: 'stacked statements in one raw query are refused (42601: one statement per query)', statements: [`SELECT 1; SET LOCAL ${SETTING} = '%B%'; SELECT 2`], saw: () => [], status: 500, code: 'FST_TENANT_RLS_QUERY_FAILED', refused: '42601' },
  { name: 'SET ROLE to a broader role reads every tenant inside the transaction; the commit check refuses', statements: [`SET ROLE ${auditor}`], saw: sorted, status: 500, code: 'FST_TENANT_RLS_TENANT_CONTEXT_CHANGED' },
  { name: 'SET LOCAL ROLE to a broader role reads every tenant inside the transaction; the commit check refuses', statements: [`SET LOCAL ROLE ${auditor}`], saw: sorted, status: 500, code: 'FST_TENANT_RLS_TENANT_CONTEXT_CHANGED' },
  { name: 'RESET ROLE changes nothing: A still sees only A and the request commits (the planted row fails WITH CHECK)', statements: ['RESET ROLE'], saw: stillA, status: 200 },
  { name: 'SET SESSION AUTHORIZATION is refused (42501)', statements: [`SET SESSION AUTHORIZATION ${db.ownerRole}`], saw: () => [], status: 500, code: 'FST_TENANT_RLS_QUERY_FAILED', refused: '42501' },
  { name: 'SET row_security = off makes the next read fail (42501) instead of bypassing the policy', statements: ['SET row_security = off'], saw: () => [], status: 500, code: 'FST_TENANT_RLS_QUERY_FAILED', refused: '42501' }
]

for (const tamperCase of cases) {
  await t.test(tamperCase.name, async (t) => {
    const pool = db.appPool({ max: 1 })
    const seen: { tenants?: string[] } = {}
    const statements = tamperCase.statements.map((statement) => statement.replaceAll('%B%', b))
    const { app, sqlStates } = await attackApp(t, pool, { tamper: tamperer(statements, seen), stamp: tamperer([], {}) })
    const before = await committed(db)
    const response = await callAs(app, a, 'tamper')
    t.equal(response.statusCode, tamperCase.status, 'status')
    if (tamperCase.code !== undefined) t.equal(response.json().code, tamperCase.code, 'error code')
    else t.same(response.json(), [a], 'the reply holds only A')
    if (tamperCase.refused !== undefined) t.same(sqlStates, [tamperCase.refused], 'PostgreSQL refused the statement')
    else t.same(seen.tenants, tamperCase.saw(a, b), 'what the route could read after tampering (recorded, never replied)')
    t.same(await committed(db), before, 'nothing was committed: no row planted for B')
    t.same(await callAs(app, b, 'stamp').then((next) => next.json()), [b], 'the next request on the connection sees only its own tenant')
    const session = await sessionOf(pool)
    t.equal(session.role, db.appRole, 'no role survives on the pooled connection')
    t.ok(session.setting === null || session.setting === '', 'no tenant setting survives on the pooled connection')
    await db.assertNoLeaks(t, pool)
  })
}

// After its own COMMIT a route would be outside any transaction: a following SET and INSERT would
// run in autocommit and commit a row for B, and whatever the transaction did before (a stored role
// setting, say) would be committed without the pre-commit check. So a statement that ends the
// transaction is never sent, however it is spelt (comments, case, AND CHAIN, END, ABORT, PREPARE
// TRANSACTION); the refusal happens before anything reaches PostgreSQL.
const REFUSED = 'FST_TENANT_RLS_TRANSACTION_CONTROL_REFUSED'
const escapes = [
  { name: 'COMMIT, then SET of the tenant to B and INSERT for B', statements: ['COMMIT', `SET ${SETTING} = '${b}'`], code: REFUSED },
  { name: 'COMMIT, then SET ROLE to a broader role', statements: ['COMMIT', `SET ROLE ${auditor}`], code: REFUSED },
  { name: 'COMMIT; SET ROLE to a broader role, stacked in one query', statements: [`COMMIT; SET ROLE ${auditor}`], code: REFUSED },
  { name: 'COMMIT; SET of the tenant to B; INSERT for B, stacked in one query', statements: [`COMMIT; SET ${SETTING} = '${b}'; INSERT INTO documents (tenant_id, code, slug, body) VALUES ('${b}', 'STACKED', 'stacked', 'by A')`], code: REFUSED },
  { name: 'a COMMIT behind nested comments and odd case', statements: ['/* a /* nested */ comment */ -- and a line comment\n\t CoMmIt WORK'], code: REFUSED },
  { name: 'COMMIT AND CHAIN', statements: ['COMMIT AND CHAIN'], code: REFUSED },
  { name: 'END', statements: ['END TRANSACTION'], code: REFUSED },
  { name: 'ROLLBACK, then SET of the tenant to B', statements: ['ROLLBACK', `SET ${SETTING} = '${b}'`], code: REFUSED },
  { name: 'ROLLBACK WORK AND CHAIN', statements: ['rollback work and chain'], code: REFUSED },
  { name: 'ABORT', statements: ['ABORT'], code: REFUSED },
  { name: 'PREPARE TRANSACTION', statements: ["PREPARE TRANSACTION 'escape'"], code: REFUSED }
]
for (const { name, statements, code } of escapes) {
  await t.test(`${name}: nothing runs outside the transaction, nothing written for B, no state passed on`, async (t) => {
    const pool = db.appPool({ max: 1 })
    const { app } = await attackApp(t, pool, { tamper: tamperer(statements, {}), stamp: tamperer([], {}) })
    const before = await committed(db)
    const response = await callAs(app, a, 'tamper')
    t.equal(response.statusCode, 500)
    t.equal(response.json().code, code, 'refused')
    t.same(await committed(db), before, 'nothing was committed for B')
    t.same((await callAs(app, b, 'stamp')).json(), [b], 'the next request on the connection sees only its own tenant')
    const session = await sessionOf(pool)
    t.same([session.role, session.setting ?? ''], [db.appRole, ''], 'no role or tenant survives on the pooled connection')
    await db.assertNoLeaks(t, pool)
  })
}

await t.test('ROLLBACK TO a savepoint is not transaction control: it is sent, and the request commits', async (t) => {
  const pool = db.appPool({ max: 1 })
  const { app } = await attackApp(t, pool, {
    async undo (request) {
      const database = dbOf(request)
      await database.execute(sql.raw('SAVEPOINT before_insert'))
      await database.insert(documents).values({ tenantId: a, code: 'UNDONE', slug: 'undone', body: 'undone' })
      await database.execute(sql.raw('ROLLBACK /* only */ TRANSACTION TO SAVEPOINT before_insert'))
      await database.insert(documents).values({ tenantId: a, code: 'KEPT-AFTER-UNDO', slug: 'kept-after-undo', body: 'kept' })
      return 'done'
    }
  })
  t.equal((await callAs(app, a, 'undo')).statusCode, 200)
  const codes = (await committed(db)).documents.filter((row) => row.tenant_id === a).map((row) => row.code)
  t.ok(codes.includes('KEPT-AFTER-UNDO') && !codes.includes('UNDONE'), 'the savepoint was rolled back and the rest committed')
  await db.admin.query("DELETE FROM documents WHERE code = 'KEPT-AFTER-UNDO'")
  await db.assertNoLeaks(t, pool)
})

// The commit check passes (the transaction-local values are A's again), yet the session-level
// values underneath would come back after COMMIT. The plugin reads them after COMMIT and destroys
// the connection, so the pool never hands them to anyone.
const surviving = [
  { name: 'a session-level tenant setting under a local one', statements: [`SELECT set_config('${SETTING}', '%B%', false)`, `SELECT set_config('${SETTING}', '%A%', true)`] },
  { name: 'a session-level role under a local one', statements: [`SET ROLE ${auditor}`, `SET LOCAL ROLE ${db.appRole}`] }
]
for (const { name, statements } of surviving) {
  await t.test(`${name} commits A's work, and the connection is destroyed instead of reused`, async (t) => {
    const pool = db.appPool({ max: 1 })
    const { app } = await attackApp(t, pool, {
      async survive (request) {
        const database = dbOf(request)
        for (const statement of statements) await database.execute(sql.raw(statement.replaceAll('%B%', b).replaceAll('%A%', a)))
        const [row] = await database.insert(documents).values({ tenantId: a, code: 'KEPT', slug: 'kept', body: name }).returning({ id: documents.id })
        const pid = await database.execute<{ pid: number }>(sql`SELECT pg_backend_pid() AS pid`)
        return { id: row?.id, pid: pid.rows[0]?.pid }
      }
    })
    const response = await callAs(app, a, 'survive')
    t.equal(response.statusCode, 200, 'committed: the transaction itself was sound')
    const { id, pid } = response.json<{ id: string, pid: number }>()
    const { rows } = await db.admin.query('SELECT tenant_id FROM documents WHERE id = $1', [id])
    t.same(rows, [{ tenant_id: a }], "A's row was committed")
    const session = await sessionOf(pool)
    t.not(session.pid, pid, 'the next use of the pool gets a new connection')
    t.same([session.setting ?? '', session.role], ['', db.appRole], 'and it carries no leftover state')
    await db.admin.query('DELETE FROM documents WHERE id = $1', [id])
    await db.assertNoLeaks(t, pool)
  })
}

await t.test('cleanup: the auditor role', drop)
