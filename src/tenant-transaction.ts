// The one module that sends transaction SQL. A TenantTransaction owns at most one pooled client
// for one tenant: it takes the client lazily on the first query, opens the transaction with the
// tenant setting in the same round trip as that query, and finishes exactly once (commit or
// rollback), releasing the client exactly once and destroying it whenever it might still carry
// state. It has no Fastify imports, so HTTP requests and withTenant share it.
import type { EventEmitter } from 'node:events'
import type pg from 'pg'
import type { Pool, PoolClient, QueryResult } from 'pg'
import {
  CommitFailedError,
  DatabaseUnavailableError,
  RoleAlteredError,
  TenantContextChangedError,
  TransactionClosedError,
  SignedContextUnavailableError,
  SingleRoundTripRefusedError,
  TransactionControlRefusedError,
  UnexpectedRoleError
} from './errors.js'
import { openTimer, publishOpen, queriesObserved, traceFinish, traceQuery } from './diagnostics.js'
import { preparedStatementCount, sendEnclosed, sendOpening, sendRouteQuery, sendStatements } from './opening-query.js'
import { DEFAULT_PREPARED_ROUTE_QUERIES, nameRouteQuery } from './route-query-names.js'
import type { RouteQueryName } from './route-query-names.js'
import { classifyRouteStatement } from './route-statement.js'
import type { RouteStatementKind } from './route-statement.js'
import { errorForSqlState } from './sql-state-errors.js'
import type { EnclosedQuery, PipelinedStatement } from './opening-query.js'
import type { AdmissionCheck } from './elevated/impersonation.js'
import { setLocalStatements } from './citus/set-local.js'
import type { OpenWith } from './citus/set-local.js'
import { backendPidOf } from './signed-context/backend-pid.js'
import type { ResolvedSignedContext } from './signed-context/options.js'
import { signTenantContext } from './signed-context/signer.js'
import type { IsolationLevel, PlanCacheMode } from './transaction-mode.js'
import type { SettingPairs } from './transaction-settings.js'
import type { TenantIdType } from './tenant-id.js'
import type { TenantStatusCheck } from './tenant-status/check.js'

/** What a finished transaction did. */
export type TransactionOutcome = 'committed' | 'rolled back'

/** Where a commit's pre-check puts its marker; the error it raises is recognised by this text. */
const CONTEXT_CHANGED_MARKER = 'fastify-tenant-rls: tenant context changed'
const ROLE_ALTERED_MARKER = 'fastify-tenant-rls: role altered'
const UNEXPECTED_ROLE_MARKER = 'fastify-tenant-rls: unexpected role'
const SET_LOCAL_MARKER = 'fastify-tenant-rls: SET LOCAL did not set the tenant'

/** Default `lock_timeout` of every tenant transaction, in milliseconds. */
export const DEFAULT_LOCK_TIMEOUT = 5000

// Opens the transaction's tenant context and reads the role it opened as, which COMMIT compares
// with. lock_timeout is local too: one tenant holding a table lock (LOCK TABLE, a long ALTER) makes
// other tenants' requests fail fast, not queue forever.
const OPENING_SQL = 'SELECT pg_catalog.set_config($1, $2, true), current_user, pg_catalog.set_config($3, $4, true)'

// Two closings. Plain route statements (route-statement.ts) can leave session settings, advisory
// locks, sequence state and temporary tables, which the reset below undoes at little cost. Any
// other statement (a DO block, ALTER, PREPARE, DECLARE, ...) can leave more, and those few
// transactions pay for the checks below, marked "after other statements".

// After other statements: how many rows of the catalogs that every connection of the role depends
// on this backend has written and not yet reported (ALTER ROLE: its password, its stored settings;
// ALTER DATABASE ... SET). Unreported counts can include earlier transactions of this backend, but
// none are reported while a transaction block is open, so the difference between a reading taken
// before the first such statement and the pre-commit check is exactly what this transaction (its
// savepoints included) wrote. The catalogs themselves cannot tell: the application role may not
// read pg_authid. 1260 and 2964 are the fixed OIDs of pg_authid and pg_db_role_setting. Operators
// are schema-qualified here and below, as route code can change search_path within the transaction.
const SHARED_CATALOG_WRITES = [1260, 2964]
  .flatMap((catalog) => ['inserted', 'updated', 'deleted'].map((kind) => `pg_catalog.pg_stat_get_xact_tuples_${kind}(${catalog}::pg_catalog.oid)`))
  .join(' OPERATOR(pg_catalog.+) ')
const CATALOG_WRITES_SQL = `SELECT ${SHARED_CATALOG_WRITES}`

// With openWith 'set-local' the tenant is set by SET LOCAL just before (citus/set-local.ts). The
// statement then reads it back and compares it with the bound id: the one tenant id written into
// SQL text is proved, on the server, to be exactly the id that was verified, or the cast fails and
// PostgreSQL skips the first query. Same columns and parameters as OPENING_SQL.
const SET_LOCAL_OPENING_SQL = 'SELECT (CASE WHEN pg_catalog.current_setting($1, true) OPERATOR(pg_catalog.=) $2::text ' +
  `THEN '0' ELSE '${SET_LOCAL_MARKER}' END)::int, current_user, pg_catalog.set_config($3, $4, true)`

// Further set_config pairs (timeouts, the user's extra settings) follow in OPENING_SQL's statement,
// all bound: the text depends only on how many there are, never on a name or value.
const openingTexts = new Map<string, string[]>([[OPENING_SQL, [OPENING_SQL]], [SET_LOCAL_OPENING_SQL, [SET_LOCAL_OPENING_SQL]]])
// Texts are kept for the usual handful of pairs; a longer list (settings spread from a token's
// claims, say) is built each time, and sent unnamed, rather than letting a client grow the cache
// or the named statements of every connection.
const CACHED_OPENINGS = 16

function openingSql (extraPairs: number, head: string): { text: string, cached: boolean } {
  const cached = extraPairs <= CACHED_OPENINGS
  const texts = openingTexts.get(head) ?? []
  let text = texts[extraPairs]
  if (text === undefined) {
    const calls = Array.from({ length: extraPairs }, (_, i) => `pg_catalog.set_config($${5 + 2 * i}, $${6 + 2 * i}, true)`)
    text = [head, ...calls].join(', ')
    if (cached) texts[extraPairs] = text
  }
  return { text, cached }
}

// BEGIN's own transaction modes, the only words of the opening not sent as parameters (BEGIN takes
// none): fixed keywords picked from this table, never text from an option.
const ISOLATION_SQL: Readonly<Record<IsolationLevel, string>> = {
  'read committed': ' ISOLATION LEVEL READ COMMITTED',
  'repeatable read': ' ISOLATION LEVEL REPEATABLE READ',
  serializable: ' ISOLATION LEVEL SERIALIZABLE'
}

// After other statements, before the check, in the same message: PostgreSQL runs code at COMMIT,
// after any check placed in front of it: the query of a WITH HOLD cursor is run to the end then,
// and deferred constraint triggers fire then. Either could switch the tenant and write after the
// check passed. Closing every cursor and firing every deferred trigger now puts all of that before
// the check (a deferred key violation is reported here instead of at COMMIT, with the same meaning).
const BEFORE_CHECK: readonly PipelinedStatement[] = [
  { text: 'CLOSE ALL' },
  { text: 'SET CONSTRAINTS ALL IMMEDIATE' }
]

// Before COMMIT, in the same message: if route code changed the tenant setting or the role (or,
// after other statements, altered the role or a stored setting, which would reach every future
// connection: a new password locks every tenant out), the cast fails, PostgreSQL skips the COMMIT
// and the transaction stays aborted.
const CONTEXT_INTACT = 'COALESCE(pg_catalog.current_setting($1, true) OPERATOR(pg_catalog.=) $2::text, false) ' +
  'AND current_user OPERATOR(pg_catalog.=) $3::name'
const PRE_COMMIT_CHECK_SQL = `SELECT (CASE WHEN ${CONTEXT_INTACT} THEN '0' ELSE $4 END)::int`
const PRE_COMMIT_CHECK_AFTER_OTHER_SQL = `SELECT (CASE WHEN ${CONTEXT_INTACT} THEN (CASE ` +
  `WHEN ${SHARED_CATALOG_WRITES} OPERATOR(pg_catalog.<>) $6::bigint THEN $5 ELSE '0' END) ELSE $4 END)::int`

// After COMMIT or ROLLBACK: read what decides whether the client may be reused (the session-level
// tenant and role), and release session advisory locks. Read before the reset below. After other
// statements also: SQL-level prepared statements (route state: they would outlive the request; the
// read spells the DEALLOCATE for them, so that behind PgBouncer they leave the server connection
// too) and protocol-level ones (pg's own cache: fewer on the server than pg believes means a
// route's DEALLOCATE broke it). Qualified throughout: a session-level search_path is in force here.
const SESSION_READ_SQL = 'SELECT pg_catalog.current_setting($1, true), current_user, pg_catalog.pg_advisory_unlock_all()'
const SESSION_READ_AFTER_OTHER_SQL = SESSION_READ_SQL +
  ", pg_catalog.string_agg('DEALLOCATE ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(name), '; ') FILTER (WHERE from_sql), " +
  'pg_catalog.count(*) FILTER (WHERE NOT from_sql) FROM pg_catalog.pg_prepared_statements'

// What DISCARD ALL does, minus what cannot or must not be done here: DISCARD ALL itself refuses to
// run in a multi-statement sequence; DEALLOCATE ALL would drop pg's (and the plugin's) protocol-level
// prepared statements, which are not tenant state (SQL-level ones are caught by the read above);
// DISCARD PLANS would only cost re-planning. Each of these undoes something a route can leave on
// the session that the end of its transaction does not: WITH HOLD cursors, a session role, plain
// SET / set_config(..., false) of any setting (search_path, client_encoding, TimeZone, a custom
// app.* value, default transaction modes), LISTEN registrations, temporary tables, and the
// currval/lastval cache of sequences. Session advisory locks are released by the read.
const SESSION_RESET: readonly PipelinedStatement[] = [
  { text: 'CLOSE ALL' },
  { text: 'SET SESSION AUTHORIZATION DEFAULT' },
  { text: 'RESET ALL' },
  { text: 'UNLISTEN *' },
  { text: 'DISCARD TEMP' },
  { text: 'DISCARD SEQUENCES' }
]

function sqlState (error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** Whether `error` is the pre-commit check's failed cast of `marker`. */
function isCheckFailure (error: unknown, marker: string): boolean {
  return sqlState(error) === '22P02' && String((error as Error | null)?.message).includes(marker)
}

function commitError (error: unknown): Error {
  if (isCheckFailure(error, CONTEXT_CHANGED_MARKER)) return new TenantContextChangedError({ cause: error })
  if (isCheckFailure(error, ROLE_ALTERED_MARKER)) return new RoleAlteredError({ cause: error })
  // A deferred key or a serialization failure means at COMMIT what it means in a route.
  return errorForSqlState(error) ?? new CommitFailedError({ cause: error })
}

// The SET LOCAL opening's read-back found another tenant than the one verified: nothing ran.
function openingError (error: unknown): unknown {
  return isCheckFailure(error, SET_LOCAL_MARKER) ? new TenantContextChangedError({ cause: error }) : error
}

function unavailable (cause: unknown): Error {
  const error = new DatabaseUnavailableError({ cause })
  // Fastify's default error handler copies `headers` onto the reply.
  return Object.assign(error, { headers: { 'retry-after': '1' } })
}

// pg's client reads the server's messages through its `connection`, an event emitter that pg
// documents for custom query objects; its typings do not describe it.
function connectionOf (client: PoolClient): EventEmitter {
  return (client as unknown as { connection: EventEmitter }).connection
}

// Every query of route code goes through the extended protocol, where PostgreSQL accepts exactly
// one statement per query (42601 otherwise). Over the simple protocol a raw query could stack
// `COMMIT; SET app.current_tenant_id = …; INSERT …` and run the tail outside the transaction,
// where no check of the plugin's can stop it.
function oneStatement (config: unknown): { text: string, name?: unknown, queryMode: 'extended' } {
  return typeof config === 'string'
    ? { text: config, queryMode: 'extended' }
    : { ...(config as { text: string }), queryMode: 'extended' }
}

type RouteQueryConfig = ReturnType<typeof oneStatement>

/** Something that can run a query: the shape drizzle's node-postgres session calls. */
export interface Queryable {
  query (config: unknown, values?: unknown[]): Promise<QueryResult>
}

export interface TenantTransactionOptions {
  /** `lock_timeout` of the transaction in milliseconds (0: wait forever). Default 5000. */
  lockTimeout?: number | undefined
  /**
   * Keep the plugin's own statements as named prepared statements of each connection (default
   * true). Turn off behind a pooler that cannot keep them (PgBouncer before 1.21 in transaction mode).
   */
  preparedStatements?: boolean | undefined
  /**
   * How many route query texts each connection keeps as prepared statements (route-query-names.ts);
   * 0 sends them unnamed. Default 100, and 0 when `preparedStatements` is false.
   */
  preparedRouteQueries?: number | undefined
  /** Opens the transaction READ ONLY. */
  readOnly?: boolean | undefined
  /**
   * No transaction held across queries: each query travels alone in one round trip, as its own
   * read-only implicit transaction between the opening and the closing checks (see #runEnclosed).
   * Needs `expectedRole`.
   */
  singleRoundTrip?: boolean | undefined
  /** Isolation level of the transaction; the server's default when undefined. */
  isolationLevel?: IsolationLevel | undefined
  /** `statement_timeout` of the transaction in milliseconds; the session's when undefined. */
  statementTimeout?: number | undefined
  /** `idle_in_transaction_session_timeout` in milliseconds; the session's when undefined. */
  idleInTransactionSessionTimeout?: number | undefined
  /** `plan_cache_mode` of the transaction; the session's when undefined. */
  planCacheMode?: PlanCacheMode | undefined
  /** Extra transaction-local settings, names already validated (see transaction-settings.ts). */
  settings?: SettingPairs | undefined
  /**
   * Signed tenant context (signed-context/): the opening also sets a signature of the tenant, bound
   * to the connection's backend pid and a short expiry, which the policies' verifying function
   * checks. Route SQL that sets the tenant setting itself has no such signature: it sees no rows.
   */
  signedContext?: ResolvedSignedContext | undefined
  /**
   * The tenant's status check (tenant-status/): one more statement of the opening, failing when the
   * tenant is not active, so that the first query never runs for a suspended or moving tenant.
   */
  tenantStatus?: TenantStatusCheck | undefined
  /**
   * An impersonated request (elevated/impersonation.ts): the opening also runs the admission, last
   * before the first query; without a live grant it fails, so the query never runs.
   */
  admission?: AdmissionCheck | undefined
  /**
   * How the opening sets the tenant (citus/set-local.ts): `set_config` with bound parameters (the
   * default), or `SET LOCAL` for Citus, with the id checked again as `tenantIdType` before it is
   * written into the statement. Not with `singleRoundTrip`, `signedContext` or `settings`.
   */
  openWith?: OpenWith | undefined
  /** The type `tenantId` was checked as (default `'uuid'`); `openWith: 'set-local'` checks it again. */
  tenantIdType?: TenantIdType | undefined
  /** Called when the connection is destroyed rather than reused, with what route code left on it. */
  onDiscard?: ((reason: string) => void) | undefined
  /**
   * The role the pool was checked to run as. A connection that opens as any other role (a
   * session-level SET ROLE that route code left on a server connection PgBouncer shares) is refused.
   */
  expectedRole?: string | undefined
  /** Called once, when the transaction takes its connection (not when it is created). */
  onOpen?: (transaction: TenantTransaction) => void
  /** Called once, after the connection has been released or destroyed. */
  onFinish?: (transaction: TenantTransaction) => void
}

/**
 * One tenant's transaction on one pooled connection. Taken lazily: a request that never queries
 * never takes a connection. Every finishing path is idempotent.
 */
export class TenantTransaction implements Queryable {
  readonly tenantId: string
  readonly #pool: Pool
  readonly #setting: string
  readonly #hooks: TenantTransactionOptions
  #client: PoolClient | undefined
  #opening: Promise<PoolClient> | undefined
  #finishing: Promise<TransactionOutcome> | undefined
  #queue: Promise<unknown> = Promise.resolve()
  /** Set when the client reported an error: it is destroyed, never returned to the pool. */
  #broken = false
  /** The role the transaction opened as; COMMIT refuses if route code changed it. */
  #role: string | undefined
  /** Shared catalog writes counted before the first 'other' route statement (see SHARED_CATALOG_WRITES). */
  #catalogWrites: string | undefined
  /** Set once route code sent an 'other' statement (route-statement.ts): the closing checks more. */
  #sentOther = false
  /** Set when the server reports no open transaction before the plugin ended it (see #onReadyForQuery). */
  #endedByRoute = false
  /** Set when the tenant status refused the opening: it failed on purpose, on a sound connection. */
  #statusRefused = false
  /** When the connection was taken, for the finish event's hold time; 0 when nobody listened then. */
  #heldSince = 0

  /** `tenantId` must already be canonical and `setting` validated (it is also written as an identifier). */
  constructor (pool: Pool, tenantId: string, setting: string, hooks: TenantTransactionOptions = {}) {
    this.#pool = pool
    this.tenantId = tenantId
    this.#setting = setting
    this.#hooks = hooks
  }

  /** True once a connection has been taken. */
  get opened (): boolean {
    return this.#opening !== undefined
  }

  /** True once commit or rollback has started; no query is accepted after that. */
  get finished (): boolean {
    return this.#finishing !== undefined
  }

  /** Runs a query inside the transaction, opening it first if this is the first query. */
  query (config: unknown, values?: unknown[]): Promise<QueryResult> {
    // Queries run one after another: route code may fire several at once (Promise.all), and pg
    // deprecates queueing on a busy client. A failed query does not stop the ones queued behind it.
    const run = this.#queue.then(() => queriesObserved() ? traceQuery(this.tenantId, config, () => this.#run(config, values)) : this.#run(config, values))
    this.#queue = run.catch(() => {})
    return run
  }

  async #run (rawConfig: unknown, values?: unknown[]): Promise<QueryResult> {
    if (this.#finishing !== undefined) throw new TransactionClosedError()
    const config = oneStatement(rawConfig)
    const kind = classifyRouteStatement(config.text)
    // Never sent: it would commit what the transaction did so far without the pre-commit check.
    if (kind === 'ends-transaction') throw new TransactionControlRefusedError()
    if (this.#hooks.singleRoundTrip === true) return this.#runEnclosed(config, kind, values)
    const firstOther = kind === 'other' && !this.#sentOther
    if (kind === 'other') this.#sentOther = true
    let carried: Promise<QueryResult> | undefined
    // Every query awaits the one open: if it failed (connection refused, wrong role, set_config
    // refused), so does every later query, even when route code caught the first error.
    const client = await (this.#opening ??= this.#open(config, kind, values, firstOther, (result) => { carried = result }))
    // The first query usually travels with the open: it ran inside the transaction, whatever came after.
    if (carried !== undefined) return carried
    // A rollback (client gone, app closing) may have started while this query waited for the open.
    if (this.#finishing !== undefined || this.#endedByRoute) throw new TransactionClosedError()
    if (firstOther && this.#catalogWrites === undefined) return this.#countThenRun(client, config, values)
    const named = this.#nameOf(client, config, kind)
    return sendRouteQuery(client, named === undefined ? config : { ...config, name: named.name }, values, named?.evicted)
  }

  // A query the route did not name itself gets its connection's name for its text (route-query-names.ts).
  #nameOf (client: PoolClient, config: RouteQueryConfig, kind: RouteStatementKind): RouteQueryName | undefined {
    if (kind !== 'query' || config.name !== undefined) return undefined
    const capacity = this.#hooks.preparedRouteQueries ?? (this.#hooks.preparedStatements === false ? 0 : DEFAULT_PREPARED_ROUTE_QUERIES)
    return nameRouteQuery(client, config.text, capacity)
  }

  // Single-round-trip mode: the query travels as [opening, role and tenant assert, query, pre-commit
  // check, session read, session reset] with one Sync and no BEGIN, so PostgreSQL runs it all as
  // one implicit transaction that the Sync commits: the transaction-local settings end there, a
  // failure anywhere skips everything after it (a failed opening or assert means the query never
  // ran; a failed check withholds its result), and the connection goes back to the pool at once.
  // The transaction is READ ONLY (transaction_read_only, set before the first snapshot, cannot be
  // turned off by the query), and only queries are sent: anything that needs a transaction across
  // statements (SET, savepoints, DO, ...) is refused before it is sent.
  async #runEnclosed (config: RouteQueryConfig, kind: RouteStatementKind, values: unknown[] | undefined): Promise<QueryResult> {
    const role = this.#hooks.expectedRole
    // SET LOCAL needs BEGIN's transaction block; the options refuse the pair, this fails closed.
    if (kind !== 'query' || role === undefined || this.#hooks.openWith === 'set-local') throw new SingleRoundTripRefusedError()
    const askedAt = openTimer()
    let client: PoolClient
    try {
      client = await this.#pool.connect()
    } catch (error) {
      publishOpen(this.tenantId, this.#pool, askedAt, false)
      throw unavailable(error)
    }
    publishOpen(this.tenantId, this.#pool, askedAt, true)
    let broken = false
    const onError = (): void => { broken = true }
    client.on('error', onError)
    let leftover: string | undefined
    let sent: EnclosedQuery | undefined
    try {
      const { statements: [, opening], cached } = this.#openingStatements([...this.#signature(client), ['transaction_read_only', 'on']])
      const assert = (marker: string): PipelinedStatement => ({ text: PRE_COMMIT_CHECK_SQL, values: [this.#setting, this.tenantId, role, marker] })
      const admission = this.#hooks.admission
      const before = [opening as PipelinedStatement, assert(UNEXPECTED_ROLE_MARKER), ...this.#statusStatements(), ...(admission === undefined ? [] : [admission.statement])]
      // The session read goes last: unlike after a COMMIT, the transaction's own tenant setting is
      // still in force before the reset, and the reset (RESET ALL, SET SESSION AUTHORIZATION DEFAULT)
      // also clears any session-level value the query set. What the read finds after it is what the
      // reset could not undo.
      const [read, ...reset] = this.#sessionStatements()
      const after = [assert(CONTEXT_CHANGED_MARKER), ...reset, read as PipelinedStatement]
      const named = this.#nameOf(client, config, kind)
      sent = sendEnclosed(client, before, named === undefined ? config : { ...config, name: named.name }, values,
        after, this.#prepared(false) && cached, named?.evicted)
      const result = await sent.result
      admission?.admitted(sent.rows[before.length - 1])
      return result
    } catch (error) {
      // The failure skipped the session reset: the connection may carry whatever the query left.
      leftover = 'the query failed before the session reset'
      const refusal = this.#refusal(error)
      if (refusal !== undefined) throw refusal
      if (isCheckFailure(error, UNEXPECTED_ROLE_MARKER)) throw new UnexpectedRoleError('another role than the one checked')
      const refused = this.#hooks.admission?.refusal(error)
      if (refused !== undefined) throw refused
      throw isCheckFailure(error, CONTEXT_CHANGED_MARKER) ? new TenantContextChangedError({ cause: error }) : error
    } finally {
      if (leftover === undefined) {
        leftover = await this.#leftover(client, sent?.rows.at(-1), role)
        // Read after a sequence that ran to its end: state the reset could not undo, worth a warning.
        if (leftover !== undefined && !broken) this.#hooks.onDiscard?.(leftover)
      }
      client.off('error', onError)
      client.release(leftover !== undefined || broken ? new Error('fastify-tenant-rls: connection discarded') : undefined)
    }
  }

  // The first 'other' statement after the opening: the role catalogs' writes so far are counted in
  // the same round trip, just before it (if the count fails, PostgreSQL skips the statement).
  async #countThenRun (client: PoolClient, config: object, values: unknown[] | undefined): Promise<QueryResult> {
    const counted = sendOpening(client, [{ text: CATALOG_WRITES_SQL }], config, values)
    const [row] = await counted.opened
    this.#catalogWrites = row?.[0] ?? undefined
    return counted.result ?? client.query(config as pg.QueryConfig, values)
  }

  /** Commits (after checking the tenant context is intact), or throws a mapped error having rolled back. */
  async commit (): Promise<void> {
    const outcome = await this.#finish(true)
    // The transaction was already rolled back by another path (disconnect, app.close): not a success.
    if (outcome !== 'committed') throw new TransactionClosedError()
  }

  /**
   * Rolls back if open and releases the connection. Safe to call any number of times, on any path.
   * `reason` and `errorCode` say why, in the finish event (diagnostics.ts), when this call finishes it.
   */
  async rollback (reason?: string, errorCode?: string): Promise<void> {
    // After a failed commit the finish promise holds the commit's error, and that commit has
    // already rolled back; the caller of commit() got the error, so it is not thrown twice.
    await this.#finish(false, reason, errorCode).catch(() => {})
  }

  #finish (commit: boolean, reason?: string, errorCode?: string): Promise<TransactionOutcome> {
    if (this.#finishing === undefined && this.#opening === undefined) {
      // Never opened, so nothing to send: finish at once (the common case of a route that never
      // touched the database), and refuse any query from now on.
      this.#finishing = Promise.resolve(commit ? 'committed' : 'rolled back')
      this.#hooks.onFinish?.(this)
    }
    this.#finishing ??= traceFinish(this.#settle(commit), this.tenantId, this.#heldSince, reason, errorCode)
    return this.#finishing
  }

  /** Takes a connection and opens the transaction, sending the first query along when it can ride. */
  async #open (config: RouteQueryConfig, kind: RouteStatementKind, values: unknown[] | undefined, counting: boolean, carry: (result: Promise<QueryResult>) => void): Promise<PoolClient> {
    let client: PoolClient
    const askedAt = openTimer()
    try {
      client = await this.#pool.connect()
    } catch (error) {
      publishOpen(this.tenantId, this.#pool, askedAt, false)
      throw unavailable(error)
    }
    this.#heldSince = publishOpen(this.tenantId, this.#pool, askedAt, true)
    // A checked-out pg client that loses its server emits 'error'; unheard, that kills the process.
    client.on('error', this.#onClientError)
    connectionOf(client).on('readyForQuery', this.#onReadyForQuery)
    this.#client = client
    this.#hooks.onOpen?.(this)
    // Nothing is sent once a rollback has started while the connection was being taken.
    if (this.#finishing !== undefined) return client
    // Bound parameters (but for openWith 'set-local': citus/set-local.ts), and no round trip of its
    // own: see opening-query.ts for why a failed open can never let the first query run outside the transaction.
    const { statements, cached } = this.#openingStatements(this.#signature(client))
    const named = this.#nameOf(client, config, kind)
    const admission = this.#hooks.admission
    const sent = [
      ...statements,
      ...(counting ? [{ text: CATALOG_WRITES_SQL }] : []),
      ...this.#statusStatements(),
      // Last, after the tenant setting its grants policy reads, right before the first query.
      ...(admission === undefined ? [] : [admission.statement])
    ]
    const opening = sendOpening(client, sent, named === undefined ? config : { ...config, name: named.name }, values, this.#prepared(false) && cached, named?.evicted)
    if (opening.result !== undefined) carry(opening.result)
    const rows = await opening.opened.catch((error: unknown) => { throw this.#refusal(error) ?? admission?.refusal(error) ?? openingError(error) })
    // The opening's SELECT is its last statement (after BEGIN, or after BEGIN and the SET LOCALs).
    const row = rows[statements.length - 1]
    const counted = rows[statements.length]
    admission?.admitted(rows[sent.length - 1])
    if (counting) this.#catalogWrites = counted?.[0] ?? undefined
    const role = String(row?.[1])
    const expected = this.#hooks.expectedRole
    // The first query already ran as `role`; throwing here discards its result, and the rollback
    // that follows undoes its effects and destroys the connection (its role differs from #role).
    this.#role = expected ?? role
    if (expected !== undefined && role !== expected) throw new UnexpectedRoleError(role)
    return client
  }

  // After the tenant setting (the tenants table's policy reads it), before the admission.
  #statusStatements (): PipelinedStatement[] {
    const status = this.#hooks.tenantStatus
    return status === undefined ? [] : [status.statement(this.tenantId)]
  }

  /** The status check's error for a failed opening, remembering that the connection was left sound. */
  #refusal (error: unknown): Error | undefined {
    const refusal = this.#hooks.tenantStatus?.refusal(error)
    if (refusal !== undefined) this.#statusRefused = true
    return refusal
  }

  // The signed context's setting for this connection (none when the mode is off). Signed per
  // opening: the signature names this backend and expires soon after, so one that route code reads
  // is worth nothing on another connection or later. A connection with no pid to sign for cannot
  // carry the mode: refused before anything is sent (fail closed, with a clear error).
  #signature (client: PoolClient): SettingPairs {
    const signed = this.#hooks.signedContext
    if (signed === undefined) return []
    const backendPid = backendPidOf(client)
    if (backendPid === undefined) throw new SignedContextUnavailableError()
    const { name, value } = signTenantContext({ key: signed.signingKey, tenantId: this.tenantId, backendPid, expiresAt: Date.now() + signed.ttl })
    return [[name, value]]
  }

  // The transaction modes go into BEGIN itself, which PostgreSQL applies before any statement of
  // the transaction runs: a route can no more turn a READ ONLY transaction read-write afterwards
  // (25006 once a query has run) than start it at another isolation level.
  #openingStatements (more: SettingPairs = []): { statements: PipelinedStatement[], cached: boolean } {
    const { readOnly, isolationLevel, statementTimeout, idleInTransactionSessionTimeout, planCacheMode, settings = [] } = this.#hooks
    const begin = 'BEGIN' + (isolationLevel === undefined ? '' : ISOLATION_SQL[isolationLevel]) + (readOnly === true ? ' READ ONLY' : '')
    const values = [this.#setting, this.tenantId, 'lock_timeout', String(this.#hooks.lockTimeout ?? DEFAULT_LOCK_TIMEOUT)]
    if (statementTimeout !== undefined) values.push('statement_timeout', String(statementTimeout))
    if (idleInTransactionSessionTimeout !== undefined) values.push('idle_in_transaction_session_timeout', String(idleInTransactionSessionTimeout))
    if (planCacheMode !== undefined) values.push('plan_cache_mode', planCacheMode)
    for (const [name, value] of [...more, ...settings]) values.push(name, value)
    const setLocal = this.#hooks.openWith === 'set-local'
    const { text, cached } = openingSql(values.length / 2 - 2, setLocal ? SET_LOCAL_OPENING_SQL : OPENING_SQL)
    const tenantSet = setLocal ? setLocalStatements(this.#setting, this.tenantId, this.#hooks.tenantIdType ?? 'uuid') : []
    return { statements: [{ text: begin }, ...tenantSet, { text, values }], cached }
  }

  // Whether a sequence goes as named statements. Not after other statements: one of them may have
  // deallocated the plugin's statements (the closing then notices and discards the connection).
  #prepared (afterOther: boolean): boolean {
    return this.#hooks.preparedStatements !== false && !afterOther
  }

  /** The pre-commit check and COMMIT, then the session statements; also the position of the session read. */
  #commitStatements (role: string): { statements: PipelinedStatement[], readAt: number } {
    const context = [this.#setting, this.tenantId, role, CONTEXT_CHANGED_MARKER]
    const upToCommit: PipelinedStatement[] = this.#sentOther
      // No count (the count itself failed) never compares equal: fail closed.
      ? [...BEFORE_CHECK, { text: PRE_COMMIT_CHECK_AFTER_OTHER_SQL, values: [...context, ROLE_ALTERED_MARKER, this.#catalogWrites ?? '-1'] }, { text: 'COMMIT' }]
      : [{ text: PRE_COMMIT_CHECK_SQL, values: context }, { text: 'COMMIT' }]
    return { statements: [...upToCommit, ...this.#sessionStatements()], readAt: upToCommit.length }
  }

  // Sent right after COMMIT or ROLLBACK, in the same message. ROLLBACK alone is not enough: a route
  // that sends COMMIT itself ends the transaction early, and whatever it SETs after that is
  // session-level state the ROLLBACK cannot undo; and plenty of session state survives any
  // transaction end (SESSION_RESET). The read decides whether the client is destroyed; the reset
  // then cleans the server connection itself, which behind PgBouncer outlives the client
  // connection the plugin destroys.
  #sessionStatements (): PipelinedStatement[] {
    return [{ text: this.#sentOther ? SESSION_READ_AFTER_OTHER_SQL : SESSION_READ_SQL, values: [this.#setting] }, ...SESSION_RESET]
  }

  /**
   * What the session read found that must not reach the next user of the connection, if anything.
   * A refused impersonation or tenant status failed its open before the role was read, on a sound
   * connection (the server skipped to the Sync): the role checked at startup is the one to find.
   */
  async #leftover (client: PoolClient, row: Array<string | null> | undefined, expectedRole = this.#role ?? (this.#hooks.admission?.refused === true || this.#statusRefused ? this.#hooks.expectedRole : undefined)): Promise<string | undefined> {
    if (row === undefined) return 'the session could not be read'
    const [setting, role, , deallocate, protocolPrepared] = row
    if (setting !== null && setting !== '') return 'a session-level tenant setting'
    if (role !== expectedRole) return 'a session-level role'
    if (typeof deallocate === 'string') {
      // Rare enough for a round trip of its own. The names are quoted by the server.
      await client.query(deallocate).catch(() => {})
      return 'an SQL-level prepared statement (PREPARE)'
    }
    if (protocolPrepared !== undefined && Number(protocolPrepared) < preparedStatementCount(client)) return 'a deallocated protocol-level prepared statement (DEALLOCATE)'
    return undefined
  }

  // Every ReadyForQuery carries the server's transaction status. 'I' (no transaction) before the
  // plugin's own COMMIT or ROLLBACK means route code sent one itself: whatever it sends next would
  // run outside the tenant transaction, in autocommit, so nothing more is sent.
  readonly #onReadyForQuery = (message: { status?: string }): void => {
    if (message.status === 'I' && this.#finishing === undefined) this.#endedByRoute = true
  }

  readonly #onClientError = (): void => {
    // The query in flight (if any) rejects on its own; all that is left is to never reuse the client.
    this.#broken = true
  }

  async #settle (commit: boolean): Promise<TransactionOutcome> {
    // Let the open (still waiting for a connection or for BEGIN) and the query in flight settle
    // first: a client about to be handed over is released here, not leaked, and COMMIT or ROLLBACK
    // never queues behind a busy client. Queries queued after this point are refused.
    await this.#opening?.catch(() => {})
    await this.#queue
    const client = this.#client
    if (client === undefined) {
      // The open failed before it had a connection (pool timeout): nothing was sent.
      this.#hooks.onFinish?.(this)
      return commit ? 'committed' : 'rolled back'
    }
    if (!commit) {
      await this.#rollbackAndRelease(client)
      return 'rolled back'
    }
    // No role means the open itself failed: there is nothing sound to commit.
    if (this.#role === undefined) {
      await this.#rollbackAndRelease(client)
      throw commitError(new TransactionClosedError())
    }
    const { statements, readAt } = this.#commitStatements(this.#role)
    const outcome = await sendStatements(client, statements, this.#prepared(this.#sentOther))
    if (outcome.completed < readAt) {
      // The check or the COMMIT failed (or the connection went before COMMIT answered): nothing is kept.
      await this.#rollbackAndRelease(client)
      throw commitError(outcome.error)
    }
    // Committed. A failure in the session reset after COMMIT must not turn the reply into an error
    // (a client would retry work that was kept); it only means the connection cannot be trusted.
    this.#release(client, outcome.error !== undefined ? 'the session reset after COMMIT failed' : await this.#leftover(client, outcome.rows[readAt]))
    return 'committed'
  }

  async #rollbackAndRelease (client: PoolClient): Promise<void> {
    let leftover: string | undefined
    if (!this.#broken) {
      const outcome = await sendStatements(client, [{ text: 'ROLLBACK' }, ...this.#sessionStatements()], this.#prepared(this.#sentOther))
      leftover = outcome.error !== undefined ? 'the closing statements failed' : await this.#leftover(client, outcome.rows[1])
    }
    this.#release(client, leftover)
  }

  /** Returns the client to the pool, or destroys it when `leftover` names state it may still carry. */
  #release (client: PoolClient, leftover: string | undefined): void {
    client.off('error', this.#onClientError)
    connectionOf(client).off('readyForQuery', this.#onReadyForQuery)
    if (leftover !== undefined && !this.#broken) this.#hooks.onDiscard?.(leftover)
    // A client that may still be inside a transaction or carry session state must not be reused.
    client.release(leftover !== undefined || this.#broken ? new Error('fastify-tenant-rls: connection discarded') : undefined)
    this.#client = undefined
    this.#hooks.onFinish?.(this)
  }
}
