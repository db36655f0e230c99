// Cross-tenant jobs on the system pool. A job is one transaction of the system role (which sees
// every tenant through BYPASSRLS and may not delete), bracketed by two audit rows written as
// statements of their own on the same connection, outside the job's transaction: `started` before
// BEGIN, the outcome after COMMIT or ROLLBACK. A rollback cannot erase either; a job whose
// connection dies leaves a `started` row with no outcome, which is what happened as far as anyone
// can tell. Accountability is checked before a connection is taken.
import type { Pool, PoolClient } from 'pg'
import { CommitFailedError, failOption, UnexpectedRoleError } from '../errors.js'
import { connectHeld, releaseHeld } from '../held-client.js'
import { validateSchema } from '../options.js'
import type { DatabaseFactory, RegisteredSchema, TenantDatabase } from '../tenant-database.js'
import { databaseFactoryFor } from '../with-tenant.js'
import { checkAccountability } from './accountability.js'
import type { Accountability } from './accountability.js'
import { appendAuditSql } from './audit-trail.js'
import type { AuditEvent } from './audit-trail.js'
import { validateSystemPool } from './system-pool.js'
import { checkedSystemRole } from './system-role.js'
import { DEFAULT_AUDIT_TABLE, tableName } from './tables.js'
import type { TableName } from './tables.js'

/** The work of a system job: `db` sees every tenant; `.transaction()` nests as a savepoint. */
export type SystemWork<TSchema extends Record<string, unknown>, TResult> = (db: TenantDatabase<TSchema>) => Promise<TResult>

/** Options of the standalone `withSystem`. */
export interface WithSystemOptions<TSchema extends Record<string, unknown>> {
  /** drizzle schema: types the database and enables `db.query.*`. */
  schema?: TSchema
  /** Where the audit trail is. Default `'public.tenant_rls_audit'`. */
  auditTable?: string
}

/**
 * Appends the outcome row, outside any transaction, and lets the job's connection go: on that
 * connection when it still answers (then it is kept for the next job), otherwise on a fresh one
 * (the job may have killed its connection, or left it with a role that may not append; `client`
 * null: known to run as another role). The job's connection is released, destroyed, before the
 * fresh one is asked for: with a pool of one it could not be had while the other is held.
 */
async function appendOutcome (client: PoolClient | null, release: (destroy: boolean) => void, systemPool: Pool, audit: TableName, event: AuditEvent, who: Accountability, detail: Record<string, unknown>): Promise<void> {
  const values = [event, who.actor, who.reason, null, null, detail]
  if (client !== null) {
    try {
      await client.query(appendAuditSql(audit), values)
      release(false)
      return
    } catch {}
  }
  release(true)
  await systemPool.query(appendAuditSql(audit), values)
}

// What the trail records of a failure: a code (the SQLSTATE, also under drizzle's wrapper, or the
// plugin's code) or the error's class; never its message, which can quote values.
function errorCode (error: unknown): string {
  for (let link = error, depth = 0; link !== null && typeof link === 'object' && depth < 5; link = (link as { cause?: unknown }).cause, depth++) {
    const code = (link as { code?: unknown }).code
    if (typeof code === 'string') return code
  }
  return (error as Error | null)?.name ?? 'unknown'
}

/** Shared by the standalone function and `app.withSystem`: audit, run, commit or roll back, audit. */
export async function runWithSystem<TSchema extends Record<string, unknown>, TResult> (
  systemPool: Pool,
  who: Accountability,
  work: SystemWork<TSchema, TResult>,
  createDatabase: DatabaseFactory,
  audit: TableName,
  roleOf: () => Promise<string>
): Promise<TResult> {
  if (typeof work !== 'function') failOption('withSystem needs the job as a function async (db) => result')
  const role = await roleOf()
  // Held: a server that goes away mid-job reaches the job through its pending query, not the process.
  const client = await connectHeld(systemPool)
  let released = false
  function release (destroy: boolean): void {
    if (released) return
    released = true
    releaseHeld(client, destroy)
  }
  let started: string | undefined
  let committed = false
  try {
    // The `started` row commits on its own; its RETURNING also says which role the connection runs as.
    const { rows: [start] } = await client.query<{ seq: string, role: string }>(`${appendAuditSql(audit)} RETURNING seq::text AS seq, current_user::text AS role`,
      ['system_job.started', who.actor, who.reason, null, null, {}])
    started = start?.seq
    if (start?.role !== role) throw new UnexpectedRoleError(String(start?.role))
    await client.query('BEGIN')
    let result: TResult
    try {
      result = await work(createDatabase(client) as unknown as TenantDatabase<TSchema>)
      // COMMIT of a transaction a caught error aborted answers ROLLBACK, not an error.
      const commit = await client.query('COMMIT')
      if (commit.command !== 'COMMIT') throw new CommitFailedError()
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    }
    committed = true
    // A failure to record the commit is the caller's to hear about (the work is committed).
    await appendOutcome(client, release, systemPool, audit, 'system_job.committed', who, { started })
    return result
  } catch (error) {
    if (started !== undefined && !committed) {
      // The job's own error is what the caller hears; the trail keeps what it can. A connection
      // running as an unexpected role is never used again.
      const usable = error instanceof UnexpectedRoleError ? null : client
      await appendOutcome(usable, release, systemPool, audit, 'system_job.rolled_back', who, { started, error: errorCode(error) }).catch(() => {})
    }
    throw error
  } finally {
    // Still held here only when nothing showed the connection to be clean: destroyed.
    release(true)
  }
}

/**
 * Runs `work` as a system job on `systemPool` (a pool of the dedicated system role): one
 * transaction that sees every tenant, committed when `work` resolves and rolled back when it
 * throws. `actor` and `reason` are required and bounded (FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED
 * before any connection is taken) and recorded in the audit trail with the outcome. The first call
 * on a pool checks its role (FST_TENANT_RLS_UNSAFE_SYSTEM_ROLE, naming each fix).
 */
export async function withSystem<TSchema extends Record<string, unknown> = RegisteredSchema, TResult = unknown> (
  systemPool: Pool,
  accountability: Accountability,
  work: SystemWork<TSchema, TResult>,
  options: WithSystemOptions<TSchema> = {}
): Promise<TResult> {
  const who = checkAccountability(accountability)
  const audit = tableName('auditTable', options.auditTable, DEFAULT_AUDIT_TABLE)
  const pool = validateSystemPool(systemPool)
  return runWithSystem(pool, who, work, databaseFactoryFor(validateSchema(options.schema)), audit, () => checkedSystemRole(pool))
}
