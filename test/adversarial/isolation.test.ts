// Read and write isolation attacks, straight to PostgreSQL (the PgBouncer run is pgbouncer.test.ts),
// in a transaction, with each query in a round trip of its own (singleRoundTrip), and with the
// tenant opened by SET LOCAL (openWith: 'set-local', for Citus).
import t from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { createWorld } from './documents.js'
import { runIsolationCases, runIsolationCasesSingleRoundTrip } from './isolation-cases.js'
import { directTarget } from './targets.js'

const db = await createTestDatabase(t)
const world = await createWorld(db)
await t.test('in a transaction', (t) => runIsolationCases(t, db, world, directTarget(db)))
await t.test('each query in one round trip', (t) => runIsolationCasesSingleRoundTrip(t, db, world, directTarget(db)))
await t.test('in a transaction opened with SET LOCAL', async (t) => {
  // The control case must find A's row unchanged before it updates it, as on the first run.
  await db.admin.query("UPDATE documents SET body = 'before the SET LOCAL run' WHERE code = 'INV-1'")
  await runIsolationCases(t, db, world, directTarget(db), { name: 'SET LOCAL', options: { openWith: 'set-local' } })
})
