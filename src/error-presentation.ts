// Decides what a failed request shows its client when the failure came from the database.
// drizzle wraps every failed query (ours included) in an error whose message holds the SQL and its
// parameters, and pg errors name constraints and key values; Fastify's default error handler would
// send those messages verbatim. The plugin's onError hook runs before any error handler and uses
// this module to give such errors a safe code, status and message. The original error stays in
// `cause` (and in the server log), so route code and custom error handlers can still read the SQLSTATE.
import pg from 'pg'
import { QueryFailedError, ReadOnlyTransactionError } from './errors.js'

const PLUGIN_CODE_PREFIX = 'FST_TENANT_RLS_'
const queryFailed = new QueryFailedError()
const readOnly = new ReadOnlyTransactionError()
// read_only_sql_transaction: a write in a transaction opened READ ONLY (the `readOnly` options).
const READ_ONLY_SQLSTATE = '25006'

interface PresentableError extends Error {
  code?: unknown
  statusCode?: unknown
  headers?: unknown
}

function isPluginError (error: unknown): error is PresentableError {
  return error instanceof Error && String((error as PresentableError).code).startsWith(PLUGIN_CODE_PREFIX)
}

function isDrizzleQueryError (error: Error): boolean {
  // Matched by name and shape rather than class: the user's drizzle copy is the one that threw.
  return error.constructor.name === 'DrizzleQueryError' && 'query' in error && 'params' in error
}

function causes (error: Error): Error[] {
  const chain: Error[] = []
  let current: unknown = error.cause
  while (current instanceof Error && chain.length < 8) {
    chain.push(current)
    current = current.cause
  }
  return chain
}

function present (error: PresentableError, as: PresentableError): void {
  error.message = as.message
  error.code = as.code
  error.statusCode = as.statusCode
  if (as.headers !== undefined) error.headers = as.headers
}

/**
 * Rewrites, in place, an error that carries database details so that it is safe to send.
 * A plugin error inside the chain (pool timeout, closed transaction) lends its code and status;
 * any other database failure becomes FST_TENANT_RLS_QUERY_FAILED. Other errors are left alone.
 */
export function presentDatabaseError (error: unknown): void {
  if (!(error instanceof Error) || isPluginError(error)) return
  const chain = causes(error)
  const pluginCause = chain.find(isPluginError)
  if (pluginCause !== undefined) {
    present(error, pluginCause)
    return
  }
  const databaseError = [error, ...chain].find((candidate) => candidate instanceof pg.DatabaseError)
  const fromDatabase = isDrizzleQueryError(error) || databaseError !== undefined
  if (!fromDatabase || (error as PresentableError).statusCode !== undefined) return
  present(error, databaseError?.code === READ_ONLY_SQLSTATE ? readOnly : queryFailed)
}
