// Session state that outlives a transaction, straight to PostgreSQL on a pool of one connection:
// requests, app.withTenant jobs and the standalone withTenant, in every order that shares the
// connection; pg's own prepared statements; what pg_stat_activity shows of another tenant.
// (The PgBouncer run is session-state-pgbouncer.test.ts.)
import t from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { createWorld } from './documents.js'
import { createSessionStateWorld, runActivityCases, runPreparedStatementCases, runSessionStateCases, variants } from './session-state-cases.js'
import { directTarget } from './targets.js'

const db = await createTestDatabase(t)
const world = await createWorld(db)
await createSessionStateWorld(db, world)
const target = directTarget(db)

await t.test('session state left by A never reaches B on the same connection', async (t) => {
  for (const variant of Object.values(variants)) {
    await t.test(variant.name, (t) => runSessionStateCases(t, db, world, async () => target, variant))
  }
})
await t.test("pg's prepared statements survive route code's PREPARE and DEALLOCATE", (t) => runPreparedStatementCases(t, db, world, target))
await t.test('pg_stat_activity', (t) => runActivityCases(t, db, world, target))
