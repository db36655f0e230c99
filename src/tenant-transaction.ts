// The one module that sends transaction SQL. A TenantTransaction owns at most one pooled client
// for one tenant: it takes the client lazily on the first query, opens the transaction with the
// tenant setting in the same round trip as that query, and finishes exactly once (commit or
// rollback), releasing the client exactly once and destroying it whenever it might still carry
// state. It has no Fastify imports, so HTTP requests and withTenant share it.
import type { EventEmitter } from 'node:events'
import pg from 'pg'
import type { Pool, PoolClient, QueryResult } from 'pg'
import {
  CommitConflictError,
  CommitFailedError,
  DatabaseUnavailableError,
  TenantContextChangedError,
  TransactionClosedError,
  UnexpectedRoleError
} from './errors.js'
import { sendOpening } from './opening-query.js'

const { escapeLiteral } = pg

/** What a finished transaction did. */
export type TransactionOutcome = 'committed' | 'rolled back'

/** Where a commit's pre-check puts its marker; the error it raises is recognised by this text. */
const CONTEXT_CHANGED_MARKER = 'fastify-tenant-rls: tenant context changed'

// SQLSTATE classes after which a retry or a different request can succeed: integrity constraint
// violations (23xxx, e.g. a deferred unique key) and transaction rollbacks (40xxx: serialization
// failure, deadlock). Those answer 409; anything else at COMMIT is a 500.
const CONFLICT_CLASSES = new Set(['23', '40'])

function sqlState (error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

function isContextChange (error: unknown): boolean {
  return sqlState(error) === '22P02' && String((error as Error).message).includes(CONTEXT_CHANGED_MARKER)
}

function commitError (error: unknown): Error {
  if (isContextChange(error)) return new TenantContextChangedError({ cause: error })
  const state = sqlState(error)
  if (state !== undefined && CONFLICT_CLASSES.has(state.slice(0, 2))) return new CommitConflictError({ cause: error })
  return new CommitFailedError({ cause: error })
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
function oneStatement (config: unknown): object {
  return typeof config === 'string'
    ? { text: config, queryMode: 'extended' }
    : { ...(config as object), queryMode: 'extended' }
}

/** Something that can run a query: the shape drizzle's node-postgres session calls. */
export interface Queryable {
  query (config: unknown, values?: unknown[]): Promise<QueryResult>
}

export interface TenantTransactionOptions {
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
  /** Set when the server reports no open transaction before the plugin ended it (see #onReadyForQuery). */
  #endedByRoute = false

  /** `tenantId` must already be canonical and `setting` validated: both are written as literals. */
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
    const run = this.#queue.then(() => this.#run(config, values))
    this.#queue = run.catch(() => {})
    return run
  }

  async #run (rawConfig: unknown, values?: unknown[]): Promise<QueryResult> {
    if (this.#finishing !== undefined) throw new TransactionClosedError()
    const config = oneStatement(rawConfig)
    let carried: Promise<QueryResult> | undefined
    // Every query awaits the one open: if it failed (connection refused, wrong role, set_config
    // refused), so does every later query, even when route code caught the first error.
    const client = await (this.#opening ??= this.#open(config, values, (result) => { carried = result }))
    // The first query usually travels with the open: it ran inside the transaction, whatever came after.
    if (carried !== undefined) return carried
    // A rollback (client gone, app closing) may have started while this query waited for the open.
    if (this.#finishing !== undefined || this.#endedByRoute) throw new TransactionClosedError()
    return client.query(config as pg.QueryConfig, values)
  }

  /** Commits (after checking the tenant context is intact), or throws a mapped error having rolled back. */
  async commit (): Promise<void> {
    const outcome = await this.#finish(true)
    // The transaction was already rolled back by another path (disconnect, app.close): not a success.
    if (outcome !== 'committed') throw new TransactionClosedError()
  }

  /** Rolls back if open and releases the connection. Safe to call any number of times, on any path. */
  async rollback (): Promise<void> {
    // After a failed commit the finish promise holds the commit's error, and that commit has
    // already rolled back; the caller of commit() got the error, so it is not thrown twice.
    await this.#finish(false).catch(() => {})
  }

  #finish (commit: boolean): Promise<TransactionOutcome> {
    if (this.#finishing === undefined && this.#opening === undefined) {
      // Never opened, so nothing to send: finish at once (the common case of a route that never
      // touched the database), and refuse any query from now on.
      this.#finishing = Promise.resolve(commit ? 'committed' : 'rolled back')
      this.#hooks.onFinish?.(this)
    }
    this.#finishing ??= this.#settle(commit)
    return this.#finishing
  }

  /** Takes a connection and opens the transaction, sending the first query along when it can ride. */
  async #open (config: unknown, values: unknown[] | undefined, carry: (result: Promise<QueryResult>) => void): Promise<PoolClient> {
    let client: PoolClient
    try {
      client = await this.#pool.connect()
    } catch (error) {
      throw unavailable(error)
    }
    // A checked-out pg client that loses its server emits 'error'; unheard, that kills the process.
    client.on('error', this.#onClientError)
    connectionOf(client).on('readyForQuery', this.#onReadyForQuery)
    this.#client = client
    this.#hooks.onOpen?.(this)
    // Nothing is sent once a rollback has started while the connection was being taken.
    if (this.#finishing !== undefined) return client
    // Bound parameters, and no round trip of its own: see opening-query.ts for why a failed open
    // can never let the first query run outside the transaction.
    const opening = sendOpening(client, [
      { text: 'BEGIN' },
      { text: 'SELECT set_config($1, $2, true), current_user', values: [this.#setting, this.tenantId] }
    ], config, values)
    if (opening.result !== undefined) carry(opening.result)
    const [row] = await opening.opened
    const role = String(row?.[1])
    const expected = this.#hooks.expectedRole
    // The first query already ran as `role`; throwing here discards its result, and the rollback
    // that follows undoes its effects and destroys the connection (its role differs from #role).
    this.#role = expected ?? role
    if (expected !== undefined && role !== expected) throw new UnexpectedRoleError(role)
    return client
  }

  // Before COMMIT, in the same message: if route code changed the tenant setting or the role, the
  // cast fails, PostgreSQL skips the COMMIT and the transaction stays aborted. After COMMIT: read the
  // session-level values, so a SET that would outlive the transaction gets the connection destroyed.
  #commitSql (role: string): string {
    const setting = escapeLiteral(this.#setting)
    return `SELECT (CASE WHEN current_setting(${setting}, true) = ${escapeLiteral(this.tenantId)} ` +
      `AND current_user = ${escapeLiteral(role)} THEN '0' ELSE ${escapeLiteral(CONTEXT_CHANGED_MARKER)} END)::int; ` +
      `COMMIT; ${this.#sessionSql()}`
  }

  // Sent right after COMMIT or ROLLBACK, in the same message. ROLLBACK alone is not enough: a route
  // that sends COMMIT itself ends the transaction early, and whatever it SETs after that (another
  // tenant, SET ROLE) is session-level state the ROLLBACK cannot undo. The read decides whether the
  // client is destroyed; the RESET then clears a session-level tenant on the server connection
  // itself, which behind PgBouncer outlives the client connection the plugin destroys. (The setting
  // name is validated to plain identifiers, so it can stand as an identifier here.)
  #sessionSql (): string {
    return `SELECT current_setting(${escapeLiteral(this.#setting)}, true) AS setting, current_user AS role; RESET ${this.#setting}`
  }

  /** Whether the session state read by #sessionSql would reach the next user of the connection. */
  #carriesState (result: QueryResult | undefined): boolean {
    const after = result?.rows[0] as { setting: string | null, role: string } | undefined
    return after === undefined || (after.setting !== null && after.setting !== '') || after.role !== this.#role
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
    let leftover: boolean
    try {
      // No role means the open itself failed: there is nothing sound to commit.
      if (this.#role === undefined) throw new TransactionClosedError()
      const results = await client.query(this.#commitSql(this.#role)) as unknown as QueryResult[]
      leftover = this.#carriesState(results[2])
    } catch (error) {
      await this.#rollbackAndRelease(client)
      throw commitError(error)
    }
    this.#release(client, leftover)
    return 'committed'
  }

  async #rollbackAndRelease (client: PoolClient): Promise<void> {
    let failed = this.#broken
    if (!failed) {
      try {
        const results = await client.query(`ROLLBACK; ${this.#sessionSql()}`) as unknown as QueryResult[]
        failed = this.#carriesState(results[1])
      } catch {
        failed = true
      }
    }
    this.#release(client, failed)
  }

  #release (client: PoolClient, destroy: boolean): void {
    client.off('error', this.#onClientError)
    connectionOf(client).off('readyForQuery', this.#onReadyForQuery)
    // A client that may still be inside a transaction or carry session state must not be reused.
    client.release(destroy || this.#broken ? new Error('fastify-tenant-rls: connection discarded') : undefined)
    this.#client = undefined
    this.#hooks.onFinish?.(this)
  }
}
