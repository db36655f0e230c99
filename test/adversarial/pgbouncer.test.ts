// The isolation and pooling attacks a second time, through a real PgBouncer in transaction mode
// whose two server connections are shared by every client and every tenant. Skipped locally when
// pgbouncer is not installed; a failure under CI.
import t from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { createWorld } from './documents.js'
import { runIsolationCases } from './isolation-cases.js'
import { runPoolingCases } from './pooling-cases.js'
import { pgBouncerTarget } from './targets.js'

const db = await createTestDatabase(t)
const target = await pgBouncerTarget(t, db, 2)
if (target !== undefined) {
  const world = await createWorld(db, 10)
  await runIsolationCases(t, db, world, target)
  await runPoolingCases(t, db, world, target)
}
