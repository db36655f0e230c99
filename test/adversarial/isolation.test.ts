// Read and write isolation attacks, straight to PostgreSQL (the PgBouncer run is pgbouncer.test.ts),
// in a transaction and with each query in a round trip of its own (singleRoundTrip).
import t from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { createWorld } from './documents.js'
import { runIsolationCases, runIsolationCasesSingleRoundTrip } from './isolation-cases.js'
import { directTarget } from './targets.js'

const db = await createTestDatabase(t)
const world = await createWorld(db)
await t.test('in a transaction', (t) => runIsolationCases(t, db, world, directTarget(db)))
await t.test('each query in one round trip', (t) => runIsolationCasesSingleRoundTrip(t, db, world, directTarget(db)))
