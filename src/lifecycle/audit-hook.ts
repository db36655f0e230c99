// The seam where an audit trail records lifecycle jobs that change data (import, erasure). The
// hook runs inside the job's transaction, just before COMMIT, with the job's own connection: a
// record written with it commits with the job, and a hook that throws rolls the job back, so no
// erasure happens unrecorded.
import type { PoolClient } from 'pg'
import type { TableRows } from './tenant-tables.js'

/** One data-changing lifecycle job, as the audit hook sees it. */
export interface LifecycleAuditEvent {
  action: 'import' | 'erase'
  tenantId: string
  /** Rows per table: written by an import, deleted by an erasure (an import's `replace` deletions are in `replaced`). */
  tables: TableRows[]
  /** Rows an import with `replace` deleted first. */
  replaced?: TableRows[]
  /** The job's connection, inside its transaction. */
  client: PoolClient
}

/** Called once per job before it commits; throwing rolls the job back. */
export type LifecycleAuditHook = (event: LifecycleAuditEvent) => Promise<void> | void
