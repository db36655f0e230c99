// Wire plumbing for the plugin's own statements: several statements, each with bound parameters,
// in one extended-protocol sequence closed by a single Sync, so they cost one round trip and carry
// no value as a literal in their text. Two uses:
// - the opening travels in front of the route's first query. Why this is safe: when any statement
//   before the Sync fails, PostgreSQL discards every later message up to the Sync, so the route's
//   query never runs outside the opened transaction, not even when the failure comes before BEGIN
//   took effect (a cancel, a statement timeout);
// - the closing (check, COMMIT or ROLLBACK, session reset): a failed check skips the COMMIT.
// A sequence can be sent prepared: each statement then becomes a named statement of the connection
// on first use (one name per text, the same on every connection) and is only bound after that, so
// PostgreSQL parses and analyses it once per connection instead of once per request. The session
// reset never drops them (it has no DEALLOCATE). The SQL itself belongs to tenant-transaction.ts.
import pg from 'pg'
import type { PoolClient, QueryResult } from 'pg'

/** One statement of a sequence, sent unnamed, with bound text parameters. */
export interface PipelinedStatement {
  text: string
  values?: readonly string[]
  /** Never sent as a named statement, even in a prepared sequence: its text differs per tenant (citus/set-local.ts). */
  unnamed?: boolean
}

/** The first data row (text fields) of each statement, by the statement's position; undefined for none. */
export type FirstRows = Array<Array<string | null> | undefined>

/** What the client sees of an opening: the rows it returned, and the first query's own result. */
export interface Opening {
  /** The first row of each opening statement, once every one has run. */
  opened: Promise<FirstRows>
  /** The first query's result; undefined when it could not ride along and must be sent after. */
  result: Promise<QueryResult> | undefined
}

// The parts of pg's Connection and Query used here. pg documents custom query objects (pg-cursor
// and pg-query-stream are built the same way); the typings just do not describe these members.
interface Connection {
  parse (message: { name: string, text: string }): void
  bind (message: { statement: string, values: readonly string[] }): void
  execute (message: Record<string, never>): void
  sync (): void
  stream: { cork?: () => void, uncork?: () => void }
  close (message: { type: 'S', name: string }): void
  /** Named statements this connection has prepared, and those whose Parse is on its way, by name. */
  parsedStatements: Record<string, string | undefined>
  submittedNamedStatements: Record<string, string | undefined>
  on (event: 'parseComplete', listener: () => void): void
  off (event: 'parseComplete', listener: () => void): void
}

// Stands for the carried query's own Parse in the list of ParseCompletes to come (pg records that one).
const CARRIED_PARSE = '\u0000carried'

// The plugin's own named statements: one name per text, shared by every connection.
const statementNames = new Map<string, string>()

function nameOf (text: string): string {
  let name = statementNames.get(text)
  if (name === undefined) {
    name = `fastify_tenant_rls_${statementNames.size + 1}`
    statementNames.set(text, name)
  }
  return name
}

// Which of those each connection has prepared: a name is added when its ParseComplete arrives, so a
// sequence that failed before or after a Parse leaves exactly the truth (a prepared statement
// survives the failure of the transaction it was made in).
const preparedOn = new WeakMap<Connection, Set<string>>()

interface QueryInternals {
  text: unknown
  values: unknown
  name: unknown
  rows: unknown
  requiresPreparation (): boolean
  hasBeenParsed (connection: Connection): boolean
  submit (connection: Connection): Error | null
  handleDataRow (message: { fields: Array<string | null> }): void
  handleCommandComplete (message: unknown, connection: Connection): void
  handleError (error: Error, connection: Connection): void
  handleReadyForQuery (connection: Connection): void
}

type Callback = (error: Error | null | undefined, result: QueryResult) => void
const Query = pg.Query as unknown as new (config: unknown, values: unknown, callback: Callback) => QueryInternals

class OpeningQuery extends Query {
  readonly #statements: readonly PipelinedStatement[]
  /** Statements sent after the carried query, before the Sync (a single-round-trip query's checks and reset). */
  readonly #after: readonly PipelinedStatement[]
  /** Set once the carried query's own CommandComplete has arrived: what follows belongs to #after. */
  #carriedDone = false
  /** Statements of #after whose CommandComplete has arrived. */
  #afterDone = 0
  readonly #rows: FirstRows = []
  /** Opening statements whose CommandComplete has not arrived yet. */
  #pending: number
  readonly carries: boolean
  readonly opened: Promise<FirstRows>
  #settle: { resolve: (rows: FirstRows) => void, reject: (error: Error) => void } | undefined
  /** The route query's statement name, when this connection has not prepared it yet. */
  #unpreparedName: string | undefined

  readonly #prepare: boolean
  /** A route query name to close before anything else is sent (route-query-names.ts). */
  readonly #evicted: string | undefined
  /** The names (or '' for unnamed) whose ParseComplete is still to come, in order. */
  readonly #parsing: string[] = []
  #connection: Connection | undefined

  constructor (statements: readonly PipelinedStatement[], config: unknown, values: unknown, callback: Callback, prepare: boolean, evicted?: string, after: readonly PipelinedStatement[] = []) {
    super(config, values, callback)
    this.#statements = statements
    this.#after = after
    this.#prepare = prepare
    this.#evicted = evicted
    this.#pending = statements.length
    this.carries = this.#canCarry()
    this.opened = new Promise((resolve, reject) => { this.#settle = { resolve, reject } })
  }

  // Only an extended-protocol query fits in the sequence (the caller sends route queries that way),
  // and not a paged one, which keeps its portal open across round trips: those are sent after.
  #canCarry (): boolean {
    if (this.rows !== undefined || typeof this.text !== 'string') return false
    if (this.values !== undefined && !Array.isArray(this.values)) return false
    return this.requiresPreparation()
  }

  override submit (connection: Connection): Error | null {
    if (typeof this.name === 'string') {
      const previous = connection.parsedStatements[this.name] ?? connection.submittedNamedStatements[this.name]
      // pg refuses a name reused for other text before writing anything; it must not follow an
      // opening left without its Sync. The refusal reaches handleError, which fails the opening.
      if (previous !== undefined && previous !== this.text) return super.submit(connection)
      if (connection.parsedStatements[this.name] === undefined) this.#unpreparedName = this.name
    }
    let prepared = preparedOn.get(connection)
    if (prepared === undefined) {
      prepared = new Set()
      preparedOn.set(connection, prepared)
    }
    this.#connection = connection
    connection.on('parseComplete', this.#onParseComplete)
    connection.stream.cork?.()
    try {
      if (this.#evicted !== undefined) closeStatement(connection, this.#evicted)
      this.#write(connection, prepared, this.#statements)
      if (!this.carries) {
        connection.sync()
        return null
      }
      if (this.#after.length === 0) return super.submit(connection)
      // The carried query's ParseComplete, if it sends a Parse, comes between ours: keep its place.
      if (!this.hasBeenParsed(connection)) this.#parsing.push(CARRIED_PARSE)
      // pg ends the carried query with a Sync of its own; the statements after it go in front of that
      // Sync, so that they run in the same implicit transaction and a failure anywhere skips the rest.
      connection.sync = () => {
        delete (connection as Partial<Connection>).sync
        this.#write(connection, prepared, this.#after)
        connection.sync()
      }
      try {
        return super.submit(connection)
      } finally {
        delete (connection as Partial<Connection>).sync
      }
    } finally {
      connection.stream.uncork?.()
    }
  }

  #write (connection: Connection, prepared: Set<string>, statements: readonly PipelinedStatement[]): void {
    for (const statement of statements) {
      const name = this.#prepare && statement.unnamed !== true ? nameOf(statement.text) : ''
      // A text used twice in one sequence is parsed once: its ParseComplete has not arrived yet.
      if (name === '' || !(prepared.has(name) || this.#parsing.includes(name))) {
        connection.parse({ name, text: statement.text })
        this.#parsing.push(name)
      }
      connection.bind({ statement: name, values: statement.values ?? [] })
      connection.execute({})
    }
  }

  /** The first row of each statement so far: those before the carried query, then those after it. */
  get firstRows (): FirstRows {
    return this.#rows
  }

  /** How many of the statements have completed. */
  get completed (): number {
    return this.#statements.length - this.#pending
  }

  override handleDataRow (message: { fields: Array<string | null> }): void {
    if (this.#pending > 0) {
      this.#rows[this.#statements.length - this.#pending] ??= message.fields
    } else if (this.#carriedDone) {
      this.#rows[this.#statements.length + this.#afterDone] ??= message.fields
    } else {
      super.handleDataRow(message)
    }
  }

  override handleCommandComplete (message: unknown, connection: Connection): void {
    if (this.#pending === 0) {
      // The statements after the carried query are the caller's, not part of the query's result.
      if (this.#carriedDone) {
        this.#afterDone += 1
        return
      }
      this.#carriedDone = true
      return super.handleCommandComplete(message, connection)
    }
    this.#pending -= 1
    if (this.#pending > 0) return
    this.#forgetOpeningParses(connection)
    this.#settle?.resolve(this.#rows)
  }

  // ParseCompletes arrive in the order of the Parses; those of this sequence come first (a carried
  // query's own Parse comes after them, and pg records that one itself).
  readonly #onParseComplete = (): void => {
    const name = this.#parsing.shift()
    if (name !== undefined && name !== '' && name !== CARRIED_PARSE && this.#connection !== undefined) preparedOn.get(this.#connection)?.add(name)
  }

  #stopListening (): void {
    this.#connection?.off('parseComplete', this.#onParseComplete)
  }

  override handleReadyForQuery (connection: Connection): void {
    this.#stopListening()
    super.handleReadyForQuery(connection)
  }

  override handleError (error: Error, connection: Connection): void {
    // After an error PostgreSQL skips every message up to the Sync: no more ParseComplete.
    this.#stopListening()
    // An error before the opening completed stops the whole sequence: the first query did not run.
    if (this.#pending > 0) {
      this.#forgetOpeningParses(connection)
      this.#settle?.reject(error)
    }
    super.handleError(error, connection)
  }

  // pg marks the active query's statement name as prepared on every ParseComplete, the opening's
  // included. Undo that before the route query's own Parse is answered; left in place after a
  // failure, the next use of the name on this connection would skip Parse and fail.
  #forgetOpeningParses (connection: Connection): void {
    if (this.#unpreparedName !== undefined) delete connection.parsedStatements[this.#unpreparedName]
  }
}

// Closes a named statement in front of whatever follows in the same message. Closing a name the
// server does not know is not an error, so a statement whose Parse failed is closed harmlessly.
function closeStatement (connection: Connection, name: string): void {
  connection.close({ type: 'S', name })
  delete connection.parsedStatements[name]
}

// A route query sent after the opening that first closes the statement its name evicted.
class EvictingQuery extends Query {
  readonly #evicted: string

  constructor (config: unknown, values: unknown, callback: Callback, evicted: string) {
    super(config, values, callback)
    this.#evicted = evicted
  }

  override submit (connection: Connection): Error | null {
    connection.stream.cork?.()
    try {
      closeStatement(connection, this.#evicted)
      return super.submit(connection)
    } finally {
      connection.stream.uncork?.()
    }
  }
}

/**
 * Sends `statements` on `client`, followed in the same sequence by the first query when it can
 * ride along (see `result`). `evicted` names a route query statement to close first.
 */
export function sendOpening (client: PoolClient, statements: readonly PipelinedStatement[], config: unknown, values: unknown, prepare = false, evicted?: string): Opening {
  const { query, done } = submit(client, statements, config, values, prepare, evicted)
  return { opened: query.opened, result: query.carries ? done : undefined }
}

/** Sends a route query after the opening, first closing the statement `evicted` names, if any. */
export function sendRouteQuery (client: PoolClient, config: unknown, values: unknown, evicted: string | undefined): Promise<QueryResult> {
  if (evicted === undefined) return client.query(config as pg.QueryConfig, values as unknown[] | undefined)
  return new Promise((resolve, reject) => {
    client.query(new EvictingQuery(config, values, (error, result) => { error ? reject(error) : resolve(result) }, evicted) as unknown as pg.Query)
  })
}

/** What a sequence of statements did: each one's first row, and the failure that stopped it, if any. */
export interface SequenceOutcome {
  rows: FirstRows
  /** The first failure; PostgreSQL skipped every statement after it. */
  error?: Error
  /** How many statements completed before the failure (all of them when there was none). */
  completed: number
}

/**
 * Sends `statements` on `client` in one round trip and resolves, once the server is ready for the
 * next query, with what they did. It does not reject on a failed statement: which statements
 * completed before it (a COMMIT, say) is what the caller needs to know.
 */
export async function sendStatements (client: PoolClient, statements: readonly PipelinedStatement[], prepare = false): Promise<SequenceOutcome> {
  let query: OpeningQuery | undefined
  try {
    const submitted = submit(client, statements, {}, undefined, prepare)
    query = submitted.query
    await submitted.done
    return { rows: query.firstRows, completed: statements.length }
  } catch (error) {
    return { rows: query?.firstRows ?? [], error: error as Error, completed: query?.completed ?? 0 }
  }
}

/** A query sent between statements of the caller's, all in one message with one Sync. */
export interface EnclosedQuery {
  /** The query's own result; rejects with the first failure of the whole sequence. */
  result: Promise<QueryResult>
  /** The first row of each statement before the query, then of each after it, as far as they ran. */
  rows: FirstRows
}

/**
 * Sends `before`, the query, then `after` on `client`, closed by one Sync: without a BEGIN they run
 * as one implicit transaction, committed at the Sync, and a failure anywhere skips everything after
 * it up to the Sync (so a failed `before` means the query never ran, and a failed `after` withholds
 * the query's result). The query must be one that can ride (extended protocol, not paged).
 */
export function sendEnclosed (client: PoolClient, before: readonly PipelinedStatement[], config: unknown, values: unknown, after: readonly PipelinedStatement[], prepare: boolean, evicted: string | undefined): EnclosedQuery {
  const { query, done } = submit(client, before, config, values, prepare, evicted, after)
  return { result: done, rows: query.firstRows }
}

function submit (client: PoolClient, statements: readonly PipelinedStatement[], config: unknown, values: unknown, prepare: boolean, evicted?: string, after: readonly PipelinedStatement[] = []): { query: OpeningQuery, done: Promise<QueryResult> } {
  let settle: Callback = () => {}
  const done = new Promise<QueryResult>((resolve, reject) => {
    settle = (error, result) => { error ? reject(error) : resolve(result) }
  })
  const query = new OpeningQuery(statements, config, values, settle, prepare, evicted, after)
  // Whoever awaits `opened` sees an opening failure; these branches only keep it from being unhandled.
  done.catch(() => {})
  query.opened.catch(() => {})
  client.query(query as unknown as pg.Query)
  return { query, done }
}

/**
 * How many named statements pg believes this connection has prepared: a route's SQL-level
 * DEALLOCATE can remove them behind pg's back, and pg would then fail every later use of the name.
 */
export function preparedStatementCount (client: PoolClient): number {
  const connection = (client as unknown as { connection: Connection }).connection
  return Object.keys(connection.parsedStatements).length + (preparedOn.get(connection)?.size ?? 0)
}
