// What a failed statement's SQLSTATE means to the client, the same wherever it surfaces: in a
// route's query (error-presentation.ts) or at COMMIT (tenant-transaction.ts, where a deferred key or
// a serialization failure is reported). Only the states a client can act on get an error of their
// own; every caller keeps its catch-all 500 for the rest. Whatever the state, the request's
// transaction is rolled back, so every one of these replies means that nothing was committed.
import { ConflictError, DatabaseTimeoutError, ReadOnlyTransactionError, RetryableConflictError, RowForbiddenError } from './errors.js'

/** A database error made presentable; `retryable`: the same request, sent again unchanged, can succeed. */
export type MappedDatabaseError = Error & { retryable: boolean }

// PostgreSQL raises 42501 for a row a policy refuses and for a missing grant alike; only the first
// is a client's doing (a row for another tenant), and its message is the one difference. Under a
// non-English lc_messages the text does not match and the error stays a 500: it fails closed.
const RLS_REFUSAL = 'new row violates row-level security policy'

function mapped (error: Error, retryable: boolean): MappedDatabaseError {
  return Object.assign(error, { retryable })
}

/** The plugin error `databaseError` (a pg error, or anything with `code` and `message`) becomes, or undefined when its state has none. */
export function errorForSqlState (databaseError: unknown): MappedDatabaseError | undefined {
  const { code, message } = (databaseError ?? {}) as { code?: unknown, message?: unknown }
  switch (code) {
    case '23505': // unique_violation
    case '23503': // foreign_key_violation
    case '23P01': // exclusion_violation
      return mapped(new ConflictError({ cause: databaseError }), false)
    case '40001': // serialization_failure
    case '40P01': // deadlock_detected
      return mapped(new RetryableConflictError({ cause: databaseError }), true)
    case '57014': // query_canceled: statement_timeout, or a cancel request
    case '55P03': // lock_not_available: lock_timeout, or NOWAIT
      return mapped(new DatabaseTimeoutError({ cause: databaseError }), true)
    case '25006': // read_only_sql_transaction: a write in a transaction opened READ ONLY (the readOnly options)
      return mapped(new ReadOnlyTransactionError({ cause: databaseError }), false)
    case '42501': // insufficient_privilege
      return String(message).startsWith(RLS_REFUSAL) ? mapped(new RowForbiddenError({ cause: databaseError }), false) : undefined
    default:
      return undefined
  }
}
