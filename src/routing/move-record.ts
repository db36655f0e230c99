// A move's record in the placement table: the tenant's row, read and written on one connection that
// holds a session advisory lock for the whole move, so two runs of the same move never interleave
// (a crashed run's lock goes with its connection, and the next run resumes from the recorded step).
import type { Pool, PoolClient } from 'pg'
import { MoveRefusedError } from '../errors.js'
import { connectHeld, releaseHeld } from '../held-client.js'
import type { TableName } from '../elevated/tables.js'
import type { MoveStep } from './placement.js'

/** The tenant's placement row. */
export interface PlacementRow {
  database: string
  moveTarget: string | null
  moveStep: MoveStep | null
  moveFile: string | null
}

// One lock space per tenant; the text is fixed, the tenant id bound.
const LOCK_KEY = "pg_catalog.hashtextextended('fastify-tenant-rls move ' || $1, 0)"

/** The placement row of one tenant, locked against a concurrent move of the same tenant. */
export class MoveRecord {
  readonly #client: PoolClient
  readonly #table: TableName
  readonly #tenantId: string

  private constructor (client: PoolClient, table: TableName, tenantId: string) {
    this.#client = client
    this.#table = table
    this.#tenantId = tenantId
  }

  /** Takes the tenant's move lock on a connection of `pool` (a role that may update the table); refuses if another run holds it. */
  static async lock (pool: Pool, table: TableName, tenantId: string): Promise<MoveRecord> {
    const client = await connectHeld(pool)
    try {
      const { rows: [locked] } = await client.query<{ locked: boolean }>(`SELECT pg_catalog.pg_try_advisory_lock(${LOCK_KEY}) AS locked`, [tenantId])
      if (locked?.locked !== true) throw new MoveRefusedError(`another run is moving tenant ${tenantId} right now`)
    } catch (error) {
      releaseHeld(client, true)
      throw error
    }
    return new MoveRecord(client, table, tenantId)
  }

  /** The row, or undefined when the tenant has none. */
  async read (): Promise<PlacementRow | undefined> {
    const { rows: [row] } = await this.#client.query<PlacementRow>(
      `SELECT database, move_target AS "moveTarget", move_step AS "moveStep", move_file AS "moveFile" FROM ${this.#table.sql} WHERE tenant = $1`, [this.#tenantId])
    return row
  }

  /** Records the move's start: its target and export file. */
  async start (target: string, file: string): Promise<void> {
    await this.#client.query(`UPDATE ${this.#table.sql} SET move_target = $2, move_file = $3, move_step = 'started' WHERE tenant = $1`, [this.#tenantId, target, file])
  }

  /**
   * Records `step` as done. 'flipped' also places the tenant on the target, in the same statement:
   * the flip and its record cannot part, and the flip's time is the directory's own clock.
   */
  async record (step: MoveStep): Promise<void> {
    await this.#client.query(`UPDATE ${this.#table.sql} SET move_step = $2,
      database = CASE WHEN $2 = 'flipped' THEN move_target ELSE database END,
      move_flipped_at = CASE WHEN $2 = 'flipped' THEN pg_catalog.now() ELSE move_flipped_at END
      WHERE tenant = $1`, [this.#tenantId, step])
  }

  /** Milliseconds left until `drainMs` have passed since the flip, by the directory's clock (0 when passed). */
  async drainLeft (drainMs: number): Promise<number> {
    const { rows: [left] } = await this.#client.query<{ ms: number }>(
      `SELECT GREATEST(0, $2::float8 - extract(epoch FROM pg_catalog.now() - move_flipped_at) * 1000)::float8 AS ms FROM ${this.#table.sql} WHERE tenant = $1`, [this.#tenantId, drainMs])
    return Math.ceil(left?.ms ?? 0)
  }

  /** Clears the move's columns: the tenant stays where the move put it. */
  async finish (): Promise<void> {
    await this.#client.query(`UPDATE ${this.#table.sql} SET move_step = NULL, move_target = NULL, move_file = NULL, move_flipped_at = NULL WHERE tenant = $1`, [this.#tenantId])
  }

  /** Releases the lock with the connection. */
  async release (): Promise<void> {
    const unlocked = await this.#client.query(`SELECT pg_catalog.pg_advisory_unlock(${LOCK_KEY})`, [this.#tenantId]).then(() => true, () => false)
    // A connection whose unlock failed may still hold the lock: closed, never pooled.
    releaseHeld(this.#client, !unlocked)
  }
}
