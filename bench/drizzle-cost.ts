// What building a drizzle object costs per request, measured in this process: the plugin's
// per-request build of request.db (a session and a transaction object over metadata prepared once
// per plugin), against what an application would pay calling drizzle() per request, with and
// without a schema (the schema makes drizzle extract the relational config again every time).
import { drizzle } from 'drizzle-orm/node-postgres'
import pg from 'pg'
import { createDatabaseFactory } from '../dist/tenant-database.js'
import type { Queryable } from '../dist/tenant-transaction.js'
import { items } from './workloads.js'

export interface DrizzleCost {
  iterations: number
  /** Nanoseconds per construction. */
  pluginRequestDb: number
  drizzlePerRequest: number
  drizzleWithSchemaPerRequest: number
}

function nanosecondsPer (iterations: number, build: () => unknown): number {
  let keep: unknown
  for (let i = 0; i < iterations / 10; i++) keep = build() // warm up the JIT
  const started = process.hrtime.bigint()
  for (let i = 0; i < iterations; i++) keep = build()
  const elapsed = Number(process.hrtime.bigint() - started)
  return keep === undefined ? Number.NaN : elapsed / iterations
}

export function measureDrizzleCost (iterations: number): DrizzleCost {
  const schema = { items }
  const createDatabase = createDatabaseFactory(schema)
  // Never connected: only construction is timed, no query is sent.
  const pool = new pg.Pool()
  const transaction: Queryable = { query: async () => { throw new Error('not used') } }
  return {
    iterations,
    pluginRequestDb: nanosecondsPer(iterations, () => createDatabase(transaction)),
    drizzlePerRequest: nanosecondsPer(iterations, () => drizzle(pool)),
    drizzleWithSchemaPerRequest: nanosecondsPer(iterations, () => drizzle(pool, { schema }))
  }
}
