// Counts what a pool's connections really exchange with PostgreSQL, read off pg's protocol events
// rather than from the plugin's own code: every round trip ends with one ReadyForQuery, every
// statement with one CommandComplete (whose tag, like 'BEGIN' or 'SELECT 1', is kept). Also the
// checkouts and how long each client stayed checked out. Shared by the tests and the benchmark.
// Also the statement texts pg parses (recordParses), for tests of what reaches the server as SQL.
import type { EventEmitter } from 'node:events'
import type pg from 'pg'

export interface WireTraffic {
  roundTrips: number
  statements: number
  /** Command tags in the order the server completed them. */
  commands: string[]
  checkouts: number
  /** Total milliseconds clients spent checked out of the pool. */
  holdMs: number
}

export interface WireWatch {
  /** What happened since the last reset. */
  read (): WireTraffic
  reset (): void
}

function empty (): WireTraffic {
  return { roundTrips: 0, statements: 0, commands: [], checkouts: 0, holdMs: 0 }
}

/** Starts counting on `pool`; only connections opened from now on are watched, so call it first. */
export function watchWireTraffic (pool: pg.Pool, options: { keepCommands?: boolean } = {}): WireWatch {
  const keepCommands = options.keepCommands ?? true
  let traffic = empty()
  const checkedOutAt = new WeakMap<object, bigint>()
  pool.on('connect', (client) => {
    // The handshake is over when 'connect' fires: only the client's own queries are counted.
    const connection = (client as unknown as { connection: EventEmitter }).connection
    connection.on('readyForQuery', () => { traffic.roundTrips += 1 })
    connection.on('commandComplete', (message: { text: string }) => {
      traffic.statements += 1
      if (keepCommands) traffic.commands.push(message.text)
    })
  })
  pool.on('acquire', (client) => {
    traffic.checkouts += 1
    checkedOutAt.set(client, process.hrtime.bigint())
  })
  pool.on('release', (_error, client) => {
    const since = checkedOutAt.get(client)
    if (since !== undefined) traffic.holdMs += Number(process.hrtime.bigint() - since) / 1e6
    checkedOutAt.delete(client)
  })
  return {
    read: () => ({ ...traffic, commands: [...traffic.commands] }),
    reset () { traffic = empty() }
  }
}

/** One Parse message pg sent: the statement's name ('' for unnamed) and text. */
export interface RecordedParse {
  name: string
  text: string
}

/**
 * Records every Parse message the connections of `pool` send from their first connect on (each
 * extended-protocol statement text leaves pg as one; a simple-protocol Query does not appear).
 */
export function recordParses (pool: pg.Pool): RecordedParse[] {
  const parses: RecordedParse[] = []
  pool.on('connect', (client) => {
    const connection = (client as unknown as { connection: { parse (message: { name?: string, text: string }): void } }).connection
    const parse = connection.parse.bind(connection)
    connection.parse = (message) => { parses.push({ name: message.name ?? '', text: message.text }); parse(message) }
  })
  return parses
}
