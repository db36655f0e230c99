// Cross-tenant jobs on the system pool. A job is one transaction of the system role (which sees
// every tenant through BYPASSRLS and may not delete), bracketed by two audit rows written as
// statements of their own on the same connection, outside the job's transaction: `started` before
// BEGIN, the outcome after COMMIT or ROLLBACK. A rollback cannot erase either; a job whose
// connection dies leaves a `started` row with no outcome, which is what happened as far as anyone
// can tell. Accountability is checked before a connection is taken.
import type { Pool, PoolClient } from 'pg'
import { CommitFailedError, failOption, UnexpectedRoleError } from '../errors.js'
import { validateSchema } from '../options.js'
import type { DatabaseFactory, RegisteredSchema, TenantDatabase } from '../tenant-database.js'
import { databaseFactoryFor } from '../with-tenant.js'
import { checkAccountability } from './accountability.js'
import type { Accountability } from './accountability.js'
import { appendAuditSql } from './audit-trail.js'
import type { AuditEvent } from './audit-trail.js'
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

/** Checks the system pool option: a pg.Pool that cannot make a job wait forever, not the app's pool. */
export function validateSystemPool (systemPool: unknown, appPool?: unknown): Pool {
  if (systemPool === null || typeof systemPool !== 'object' || typeof (systemPool as Pool).connect !== 'function') {
    failOption('systemPool must be a pg.Pool of the dedicated system role (see systemRoleSql)')
  }
  if (systemPool === appPool) failOption('systemPool must be a pool of its own, connected as the system role, not the application pool')
  const timeout = (systemPool as Pool).options?.connectionTimeoutMillis
  if (typeof timeout !== 'number' || !(timeout > 0)) failOption('systemPool must set connectionTimeoutMillis (for example 5000), so a job waits a bounded time for a connection')
  return systemPool as Pool
}

/** Appends one audit row on `client`, outside any transaction, or on a fresh connection when the client may be broken. */
async function appendOutcome (target: Pool | PoolClient, audit: TableName, event: AuditEvent, who: Accountability, detail: Record<string, unknown>): Promise<void> {
  await target.query(appendAuditSql(audit), [event, who.actor, who.reason, null, null, detail])
}

function errorCode (error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : (error as Error | null)?.name ?? 'unknown'
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
  const client = await systemPool.connect()
  // Kept for the next job only when the connection is known to be back outside any transaction.
  let clean = false
  let started: string | undefined
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
    clean = true
    await appendOutcome(client, audit, 'system_job.committed', who, { started })
    return result
  } catch (error) {
    if (started !== undefined) {
      // After ROLLBACK on the same connection when it still answers; otherwise on another one.
      const written = await appendOutcome(client, audit, 'system_job.rolled_back', who, { started, error: errorCode(error) }).then(() => true, () => false)
      // A connection running as an unexpected role is never handed to the next job.
      clean = written && !(error instanceof UnexpectedRoleError)
      if (!written) await appendOutcome(systemPool, audit, 'system_job.rolled_back', who, { started, error: errorCode(error) }).catch(() => {})
    }
    throw error
  } finally {
    client.release(!clean)
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
