// Pooling attacks, straight to PostgreSQL (the PgBouncer run is pgbouncer.test.ts).
import t from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { createWorld } from './documents.js'
import { runPoolingCases } from './pooling-cases.js'
import { directTarget } from './targets.js'

const db = await createTestDatabase(t)
const world = await createWorld(db, 10)
await runPoolingCases(t, db, world, directTarget(db))
