// Wire plumbing for the first query of a tenant transaction: the statements that open the
// transaction travel in front of that query, in one extended-protocol sequence closed by a single
// Sync, so opening costs no round trip of its own. Why this is safe: when any statement before the
// Sync fails, PostgreSQL discards every later message up to the Sync, so the route's query never
// runs outside the opened transaction, not even when the failure comes before BEGIN took effect
// (a cancel, a statement timeout). The SQL itself belongs to tenant-transaction.ts.
import pg from 'pg'
import type { PoolClient, QueryResult } from 'pg'

/** One statement of the opening, sent unnamed, with bound text parameters. */
export interface OpeningStatement {
  text: string
  values?: readonly string[]
}

/** What the client sees of an opening: the rows it returned, and the first query's own result. */
export interface Opening {
  /** The data rows of the opening statements (text fields, in order), once every one has run. */
  opened: Promise<Array<Array<string | null>>>
  /** The first query's result; undefined when it could not ride along and must be sent after. */
  result: Promise<QueryResult> | undefined
}

// The parts of pg's Connection and Query used here. pg documents custom query objects (pg-cursor
// and pg-query-stream are built the same way); the typings just do not describe these members.
interface Connection {
  parse (message: { text: string }): void
  bind (message: { values: readonly string[] }): void
  execute (message: Record<string, never>): void
  sync (): void
  stream: { cork?: () => void, uncork?: () => void }
  /** Named statements this connection has prepared, and those whose Parse is on its way, by name. */
  parsedStatements: Record<string, string | undefined>
  submittedNamedStatements: Record<string, string | undefined>
}

interface QueryInternals {
  text: unknown
  values: unknown
  name: unknown
  rows: unknown
  requiresPreparation (): boolean
  submit (connection: Connection): Error | null
  handleDataRow (message: { fields: Array<string | null> }): void
  handleCommandComplete (message: unknown, connection: Connection): void
  handleError (error: Error, connection: Connection): void
}

type Callback = (error: Error | null | undefined, result: QueryResult) => void
const Query = pg.Query as unknown as new (config: unknown, values: unknown, callback: Callback) => QueryInternals

class OpeningQuery extends Query {
  readonly #statements: readonly OpeningStatement[]
  readonly #rows: Array<Array<string | null>> = []
  /** Opening statements whose CommandComplete has not arrived yet. */
  #pending: number
  readonly carries: boolean
  readonly opened: Promise<Array<Array<string | null>>>
  #settle: { resolve: (rows: Array<Array<string | null>>) => void, reject: (error: Error) => void } | undefined
  /** The route query's statement name, when this connection has not prepared it yet. */
  #unpreparedName: string | undefined

  constructor (statements: readonly OpeningStatement[], config: unknown, values: unknown, callback: Callback) {
    super(config, values, callback)
    this.#statements = statements
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
    connection.stream.cork?.()
    try {
      for (const statement of this.#statements) {
        connection.parse({ text: statement.text })
        connection.bind({ values: statement.values ?? [] })
        connection.execute({})
      }
      if (this.carries) return super.submit(connection)
      connection.sync()
      return null
    } finally {
      connection.stream.uncork?.()
    }
  }

  override handleDataRow (message: { fields: Array<string | null> }): void {
    if (this.#pending > 0) this.#rows.push(message.fields)
    else super.handleDataRow(message)
  }

  override handleCommandComplete (message: unknown, connection: Connection): void {
    if (this.#pending === 0) return super.handleCommandComplete(message, connection)
    this.#pending -= 1
    if (this.#pending > 0) return
    this.#forgetOpeningParses(connection)
    this.#settle?.resolve(this.#rows)
  }

  override handleError (error: Error, connection: Connection): void {
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

/**
 * Sends `statements` on `client`, followed in the same sequence by the first query when it can
 * ride along (see `result`).
 */
export function sendOpening (client: PoolClient, statements: readonly OpeningStatement[], config: unknown, values: unknown): Opening {
  let settle: Callback = () => {}
  const done = new Promise<QueryResult>((resolve, reject) => {
    settle = (error, result) => { error ? reject(error) : resolve(result) }
  })
  const query = new OpeningQuery(statements, config, values, settle)
  // Whoever awaits `opened` sees an opening failure; this branch only keeps it from being unhandled.
  done.catch(() => {})
  client.query(query as unknown as pg.Query)
  return { opened: query.opened, result: query.carries ? done : undefined }
}
