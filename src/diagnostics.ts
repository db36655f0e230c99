// What a tenant transaction tells the outside world: node:diagnostics_channel events, the channel
// mechanism Node, undici and Fastify publish on and OpenTelemetry instrumentations subscribe to.
// Three plain channels (not a TracingChannel: a tenant transaction is not one function call; it
// opens inside route code, spans hooks and finishes in onSend, so there is no call to wrap):
//   fastify-tenant-rls:transaction:open    a connection was taken (or the pool gave none in time)
//   fastify-tenant-rls:transaction:query   a route query finished (or failed)
//   fastify-tenant-rls:transaction:finish  the transaction committed or rolled back, connection returned
// Subscribers run synchronously in the request's async context (AsyncLocalStorage works there).
// Cost without a subscriber: each publishing point reads `hasSubscribers` first and returns before
// it reads a clock or builds an event object, so an unobserved transaction allocates nothing here.
// What the events never carry: query parameters or rows (tenant data), nor error messages (they
// quote key values). SQL text is carried: drizzle and the plugin send values as bound parameters,
// so the text is the statement's shape, as pg_stat_statements and OpenTelemetry's database spans
// record it.
import { channel } from 'node:diagnostics_channel'
import type { Pool, QueryResult } from 'pg'
import type { TransactionOutcome } from './tenant-transaction.js'

/** Channel names, for `diagnostics_channel.subscribe(name, listener)`. */
export const DIAGNOSTICS_CHANNELS = Object.freeze({
  open: 'fastify-tenant-rls:transaction:open',
  query: 'fastify-tenant-rls:transaction:query',
  finish: 'fastify-tenant-rls:transaction:finish'
} as const)

/** How full the pool was when a transaction asked it for a connection and got an answer. */
export interface PoolFigures {
  total: number
  idle: number
  waiting: number
}

/** Published once a transaction's first query has asked the pool for a connection and got an answer. */
export interface TransactionOpenEvent {
  tenantId: string
  /** Milliseconds spent waiting for the pool (up to its connectionTimeoutMillis when it gave none). */
  poolWaitMs: number
  /** False when the pool gave no connection in time: the request answers 503. */
  acquired: boolean
  pool: PoolFigures
}

/** Published when a query of route code (not one of the plugin's own statements) settles. */
export interface TransactionQueryEvent {
  tenantId: string
  /** The SQL text without its values (they are bound parameters). */
  text: string
  /** The command tag (SELECT, INSERT, ...); null when the query failed. */
  command: string | null
  /** Rows returned or changed; null when the query failed or the command reports none. */
  rowCount: number | null
  /** Milliseconds from sending to the answer; a first query travels with the opening and includes it. */
  durationMs: number
  /** The SQLSTATE (or the plugin's error code) of a failed query; the message is left out. */
  errorCode?: string
}

/** Published once the transaction has finished and its connection is back in the pool (or destroyed). */
export interface TransactionFinishEvent {
  tenantId: string
  outcome: TransactionOutcome
  /**
   * Milliseconds the connection was held. Absent when none was held as the finish began (pool
   * timeout, or a rollback while still waiting for the pool), or it was taken before anyone listened.
   */
  holdMs?: number
  /** Why a transaction rolled back (see the README's Observability section); absent on commit. */
  reason?: string
  /** The error code behind `reason`, when there is one (a plugin code or a SQLSTATE). */
  errorCode?: string
}

const openChannel = channel(DIAGNOSTICS_CHANNELS.open)
const queryChannel = channel(DIAGNOSTICS_CHANNELS.query)
const finishChannel = channel(DIAGNOSTICS_CHANNELS.finish)

function codeOf (error: unknown): string | undefined {
  // drizzle wraps a failed query: the SQLSTATE or the plugin's code is on its cause.
  let current = error
  for (let depth = 0; depth < 4 && current !== null && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string') return code
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

function figures (pool: Pool): PoolFigures {
  return { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }
}

/** A timestamp when open or finish events are listened to, else 0 (and no clock is read). */
export function openTimer (): number {
  return openChannel.hasSubscribers || finishChannel.hasSubscribers ? performance.now() : 0
}

/**
 * Publishes the pool's answer to a transaction that asked at `askedAt` (openTimer's value).
 * Returns when the connection was taken, for the finish event's hold time (0: not measured).
 */
export function publishOpen (tenantId: string, pool: Pool, askedAt: number, acquired: boolean): number {
  if (askedAt === 0) return 0
  const now = performance.now()
  if (openChannel.hasSubscribers) openChannel.publish({ tenantId, poolWaitMs: now - askedAt, acquired, pool: figures(pool) } satisfies TransactionOpenEvent)
  return acquired ? now : 0
}

/** True when someone listens to queries; the caller then runs its query through traceQuery. */
export function queriesObserved (): boolean {
  return queryChannel.hasSubscribers
}

/** Runs `query` and publishes its timing, command and row count (never its values or rows). */
export async function traceQuery (tenantId: string, config: unknown, query: () => Promise<QueryResult>): Promise<QueryResult> {
  const text = typeof config === 'string' ? config : String((config as { text?: unknown } | null)?.text)
  const started = performance.now()
  try {
    const result = await query()
    queryChannel.publish({ tenantId, text, command: result.command ?? null, rowCount: result.rowCount ?? null, durationMs: performance.now() - started } satisfies TransactionQueryEvent)
    return result
  } catch (error) {
    const event: TransactionQueryEvent = { tenantId, text, command: null, rowCount: null, durationMs: performance.now() - started }
    const errorCode = codeOf(error)
    if (errorCode !== undefined) event.errorCode = errorCode
    queryChannel.publish(event)
    throw error
  }
}

/**
 * Publishes the finish of the transaction settling in `finishing` and returns `finishing` itself.
 * A failed commit (the promise rejects) is reported as a rollback with reason 'commit refused'.
 */
export function traceFinish (finishing: Promise<TransactionOutcome>, tenantId: string, heldSince: number, reason: string | undefined, errorCode: string | undefined): Promise<TransactionOutcome> {
  if (!finishChannel.hasSubscribers) return finishing
  function publishFinish (outcome: TransactionOutcome, why: string | undefined, code: string | undefined): void {
    const event: TransactionFinishEvent = { tenantId, outcome }
    if (heldSince !== 0) event.holdMs = performance.now() - heldSince
    if (outcome === 'rolled back' && why !== undefined) event.reason = why
    if (outcome === 'rolled back' && code !== undefined) event.errorCode = code
    if (finishChannel.hasSubscribers) finishChannel.publish(event)
  }
  finishing.then(
    (outcome) => { publishFinish(outcome, reason, errorCode) },
    (error: unknown) => { publishFinish('rolled back', 'commit refused', codeOf(error)) }
  )
  return finishing
}
