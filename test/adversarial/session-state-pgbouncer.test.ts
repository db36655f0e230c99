// The session-state attacks behind a real PgBouncer in transaction mode with ONE server connection
// and no server_reset_query: every client connection, and every tenant, gets the server connection
// A's route left, and the plugin cannot destroy it (destroying its client connection hands the
// server connection back to PgBouncer as it is). The plugin's own reset is all that stands between
// A and B. Each case gets its own PgBouncer, so one case's leftovers cannot reach the next.
// (pg_stat_activity is tried directly only: behind PgBouncer B may be handed A's own server
// connection, which it cannot see itself.) Skipped locally without pgbouncer; a failure under CI.
import t from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { createWorld } from './documents.js'
import { createSessionStateWorld, runSessionStateCases, variants } from './session-state-cases.js'
import { pgBouncerTarget } from './targets.js'

const db = await createTestDatabase(t)
const world = await createWorld(db)
await createSessionStateWorld(db, world)

await t.test('session state left by A never reaches B on the same PgBouncer server connection', async (t) => {
  for (const variant of [variants.requests, variants.jobLeaves]) {
    await t.test(variant.name, (t) => runSessionStateCases(t, db, world, (t) => pgBouncerTarget(t, db, 1), variant))
  }
})
