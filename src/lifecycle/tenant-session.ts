// One pooled client holding one tenant-scoped transaction for a bulk lifecycle job (export,
// import, erasure). Not the request path's TenantTransaction: these jobs stream COPY data, which
// needs the raw client, and run for minutes as one unit of work. The same rules hold: the tenant
// reaches SQL as a bound parameter of set_config(..., true) (and, with openWith 'set-local', in a
// SET LOCAL after the id's check in citus/set-local.ts), so it ends with the transaction;
// the transaction finishes exactly once; a client that saw an error (an aborted COPY leaves the
// protocol mid-stream) is destroyed, never handed back to the pool.
import type { Pool, PoolClient, QueryConfig } from 'pg'
import { UnexpectedRoleError } from '../errors.js'
import { connectHeld, releaseHeld } from '../held-client.js'
import { setLocalStatements } from '../citus/set-local.js'
import type { OpenWith } from '../citus/set-local.js'
import { setLocalTenantContext } from '../signed-context/local-context.js'
import type { ResolvedSignedContext } from '../signed-context/options.js'
import { DEFAULT_LOCK_TIMEOUT } from '../tenant-transaction.js'
import type { TenantIdType } from '../tenant-id.js'

/** How the session's transaction is opened and finished. */
export interface SessionMode {
  tenantId: string
  setting: string
  /** REPEATABLE READ gives one snapshot across every table (export); READ COMMITTED otherwise. */
  isolation: 'read committed' | 'repeatable read'
  readOnly: boolean
  /** Roll back even when the work succeeds (dry runs). */
  rollback?: boolean
  /** The role the pool was checked for; any other current_user is refused. */
  expectedRole?: string
  /** Signed mode: the tenant is set again with its signature, made for this client's backend. */
  signed?: ResolvedSignedContext | undefined
  /** `'set-local'`: the tenant is first set with SET LOCAL (Citus passes that on to its workers), the id checked as `tenantIdType`. */
  openWith?: OpenWith
  tenantIdType?: TenantIdType
}

// Fixed keywords only: BEGIN takes no parameters.
const ISOLATION_SQL = { 'read committed': 'READ COMMITTED', 'repeatable read': 'REPEATABLE READ' } as const

// The tenant, then the text formats COPY writes and reads: with the same formats on both sides a
// tenant's rows come out as the same bytes whichever session reads them (a timestamptz is printed
// in the session's TimeZone), so checksums taken on two databases can be compared. lock_timeout:
// an erasure or import waiting on a tenant's busy row fails instead of queueing forever.
const OPENING_SQL = `SELECT pg_catalog.set_config($1, $2, true), current_user AS role,
  pg_catalog.set_config('TimeZone', 'UTC', true), pg_catalog.set_config('DateStyle', 'ISO, YMD', true),
  pg_catalog.set_config('IntervalStyle', 'postgres', true), pg_catalog.set_config('extra_float_digits', '1', true),
  pg_catalog.set_config('bytea_output', 'hex', true), pg_catalog.set_config('lock_timeout', $3, true)`

// Clients left mid-COPY: the consumer stopped reading (a failed write), so the server is still
// sending rows and pg still waits for the end of the COPY. Nothing more can be sent on them.
const midCopy = new WeakSet<PoolClient>()

/** Marks `client` as abandoned in the middle of a COPY: it is destroyed without a ROLLBACK. */
export function abandonedMidCopy (client: PoolClient): void {
  midCopy.add(client)
}

/** Runs `work` on one client inside a transaction carrying `mode.tenantId`; commits when it resolves (unless `rollback`). */
export async function inTenantSession<T> (pool: Pool, mode: SessionMode, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await connectHeld(pool)
  let failure: Error | undefined
  try {
    await client.query(`BEGIN ISOLATION LEVEL ${ISOLATION_SQL[mode.isolation]} ${mode.readOnly ? 'READ ONLY' : 'READ WRITE'}`)
    // One round trip each, per job. Extended protocol: one statement per message, whatever the text.
    // The opening's set_config below then sets the same value, bound, on this node.
    if (mode.openWith === 'set-local') {
      for (const { text } of setLocalStatements(mode.setting, mode.tenantId, mode.tenantIdType ?? 'uuid')) await client.query({ text, queryMode: 'extended' } as QueryConfig)
    }
    const { rows: [opened] } = await client.query<{ role: string }>(OPENING_SQL, [mode.setting, mode.tenantId, String(DEFAULT_LOCK_TIMEOUT)])
    if (mode.expectedRole !== undefined && opened?.role !== mode.expectedRole) throw new UnexpectedRoleError(opened?.role)
    // One more round trip per job, not per row: signing needs nothing the opening returns, but the
    // opening's statement is shared by every job and stays unsigned.
    if (mode.signed !== undefined) await setLocalTenantContext(client, mode.setting, mode.tenantId, mode.signed)
    const result = await work(client)
    await client.query(mode.rollback === true ? 'ROLLBACK' : 'COMMIT')
    return result
  } catch (error) {
    failure = error instanceof Error ? error : new Error(String(error))
    // Rolled back before the client is destroyed, so the server has ended the transaction when this
    // returns (closing the socket alone would end it a moment later). Not on a client left mid-COPY,
    // where the ROLLBACK would wait forever behind the unfinished COPY.
    if (!midCopy.has(client)) await client.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    // Destroyed after any failure: whatever went wrong may have left the session in a state no one checked.
    releaseHeld(client, failure)
  }
}
