// Every error the plugin raises, created once so each has a stable code and HTTP status.
// The README's error table lists the same codes; keep the two in step.
import createError from '@fastify/error'

/**
 * The request carries no valid credentials (missing, malformed, badly signed, expired, not yet
 * valid, refused by `verify`). The message names the cause in fixed words (authentication.ts);
 * the verifier's own text goes to the log.
 */
export const UnauthenticatedError = createError(
  'FST_TENANT_RLS_UNAUTHENTICATED',
  'Authentication failed: %s',
  401
)

/** The token is valid but names no tenant (claim absent/null/empty, or the resolver returned nothing). */
export const TenantMissingError = createError(
  'FST_TENANT_RLS_TENANT_MISSING',
  'The request carries no tenant',
  403
)

/** The token names a tenant, but not in the canonical form of the tenant id type (a UUID by default). */
export const TenantInvalidError = createError(
  'FST_TENANT_RLS_TENANT_INVALID',
  'The tenant id is not in its canonical form',
  403
)

/** The user's resolveTenant function threw or rejected. */
export const TenantResolutionError = createError(
  'FST_TENANT_RLS_TENANT_RESOLUTION_FAILED',
  'The tenant could not be resolved',
  403
)

/** No pooled connection could be had in time (pool exhausted, or the database is unreachable). */
export const DatabaseUnavailableError = createError(
  'FST_TENANT_RLS_DATABASE_UNAVAILABLE',
  'No database connection is available; retry later',
  503
)

/** request.db (or a withTenant db) was used after its transaction had finished. */
export const TransactionClosedError = createError(
  'FST_TENANT_RLS_TRANSACTION_CLOSED',
  'The tenant transaction has already finished; its database handle cannot be used any more',
  500
)

/** Route code sent a statement that would end the tenant transaction (COMMIT, ROLLBACK, …); it was not sent. */
export const TransactionControlRefusedError = createError(
  'FST_TENANT_RLS_TRANSACTION_CONTROL_REFUSED',
  'Route code cannot end the tenant transaction (COMMIT, END, ROLLBACK, ABORT, PREPARE TRANSACTION); the statement was not sent. Use request.db.transaction() for savepoints',
  500
)

/** Route code changed the tenant setting or the role inside the transaction; nothing was committed. */
export const TenantContextChangedError = createError(
  'FST_TENANT_RLS_TENANT_CONTEXT_CHANGED',
  'The tenant context changed during the transaction; nothing was committed',
  500
)

/** Route code altered the role (its password, its stored settings) or a stored database setting, which every future connection would carry; nothing was committed. */
export const RoleAlteredError = createError(
  'FST_TENANT_RLS_ROLE_ALTERED',
  'The transaction altered the application role or a stored setting (ALTER ROLE, ALTER DATABASE ... SET); nothing was committed',
  500
)

/** The connection runs as another role than the one checked at startup (state left by earlier route code). */
export const UnexpectedRoleError = createError(
  'FST_TENANT_RLS_UNEXPECTED_ROLE',
  'The database connection runs as role "%s", not the role checked at startup; the request was refused',
  500
)

/** A route in single-round-trip mode sent a statement that is not a query (SET, a savepoint, DO, …); it was not sent. */
export const SingleRoundTripRefusedError = createError(
  'FST_TENANT_RLS_SINGLE_ROUND_TRIP_REFUSED',
  'A single-round-trip route can only send queries (SELECT, WITH, VALUES, TABLE), each its own read-only transaction; this statement was not sent. Turn singleRoundTrip off for the route',
  500
)

/** Signed tenant context is on, but the connection reports no backend pid to sign for (a pooler in between?); nothing was sent. */
export const SignedContextUnavailableError = createError(
  'FST_TENANT_RLS_SIGNED_CONTEXT_UNAVAILABLE',
  'The database connection reports no backend pid, so no signed tenant context can be made for it (a connection pooler in between?); nothing was sent',
  500
)

/**
 * EXPLAIN under a tenant, without `signedContext`, on tables whose policies verify a signed
 * context: the statement would see none of the tenant's rows, so it is not run.
 */
export const SignedContextRequiredError = createError(
  'FST_TENANT_RLS_SIGNED_CONTEXT_REQUIRED',
  'The policies of %s read the tenant through tenant_rls.current_tenant(), which only answers to a signed tenant context: unsigned, the statement would see none of the tenant\'s rows, so it was not run; explain with the plugin\'s keys (signedContext)',
  500
)

/** A signed context was set, but the database's verifying function did not hand its tenant back (key not installed, pooler, clocks); nothing ran under it. */
export const SignedContextRejectedError = createError(
  'FST_TENANT_RLS_SIGNED_CONTEXT_REJECTED',
  'The database did not verify the signed tenant context: %s',
  500
)

/** A unique, foreign-key or exclusion constraint refused a write (SQLSTATE 23505, 23503, 23P01), in a query or at COMMIT. */
export const ConflictError = createError(
  'FST_TENANT_RLS_CONFLICT',
  'The request conflicts with existing data; nothing was committed',
  409
)

/** A serialization failure or a deadlock (SQLSTATE 40001, 40P01): the same request, sent again, can succeed. */
export const RetryableConflictError = createError(
  'FST_TENANT_RLS_RETRYABLE_CONFLICT',
  'The transaction collided with a concurrent one; nothing was committed, the request can be retried',
  409
)

/** A write was refused by a row-level security policy (42501 "new row violates row-level security policy"). */
export const RowForbiddenError = createError(
  'FST_TENANT_RLS_ROW_FORBIDDEN',
  'The row is outside the tenant and cannot be written; nothing was committed',
  403
)

/** A statement ran past statement_timeout or waited past lock_timeout (SQLSTATE 57014, 55P03). */
export const DatabaseTimeoutError = createError(
  'FST_TENANT_RLS_DATABASE_TIMEOUT',
  'The database did not finish in time; nothing was committed, retry later',
  503
)

/** COMMIT failed for a reason with no error of its own (connection lost, aborted transaction); nothing was committed. */
export const CommitFailedError = createError(
  'FST_TENANT_RLS_COMMIT_FAILED',
  'The transaction could not be committed; nothing was committed',
  500
)

/**
 * request.db.transaction() (or a withTenant db's) was given an isolation level, access mode or
 * deferrable flag. Inside the tenant transaction it is a savepoint, which cannot apply any of them.
 */
export const TransactionConfigUnsupportedError = createError(
  'FST_TENANT_RLS_TRANSACTION_CONFIG_UNSUPPORTED',
  'A nested transaction is a savepoint of the tenant transaction and cannot apply %s; nothing was run',
  500
)

/** A write was attempted in a read-only transaction (route or plugin `readOnly`); SQLSTATE 25006. Nothing was written. */
export const ReadOnlyTransactionError = createError(
  'FST_TENANT_RLS_READ_ONLY_TRANSACTION',
  'This request runs in a read-only transaction; nothing was written',
  403
)

/** The `settings` option threw or rejected; the request gets no transaction. */
export const TransactionSettingsFailedError = createError(
  'FST_TENANT_RLS_SETTINGS_FAILED',
  'The transaction settings could not be resolved',
  403
)

/** The `settings` option returned a bad name or value; the request gets no transaction. */
export const InvalidTransactionSettingsError = createError(
  'FST_TENANT_RLS_INVALID_SETTINGS',
  'Invalid transaction settings: %s',
  500
)

/** A database query failed. The SQL, parameters and constraint names stay in the server log. */
export const QueryFailedError = createError(
  'FST_TENANT_RLS_QUERY_FAILED',
  'A database query failed',
  500
)

/** request.db was read on a route without a tenant: opted out, public, or outside the plugin's scope. */
export const NoTenantContextError = createError(
  'FST_TENANT_RLS_NO_TENANT_CONTEXT',
  'request.db is only available on tenant-scoped routes, not on routes with config.tenant === false, public routes (publicRoutes) or routes outside the plugin\'s scope',
  500
)

/** A plugin option is missing or wrong; raised by register, never by a request. */
export const InvalidOptionError = createError(
  'FST_TENANT_RLS_INVALID_OPTION',
  'Invalid fastify-tenant-rls option: %s',
  500
)

/** The pool's role would bypass RLS; raised by app.ready(). */
export const UnsafeRoleError = createError(
  'FST_TENANT_RLS_UNSAFE_ROLE',
  'Refusing to start: %s',
  500
)

/** The pool could not connect when the plugin first used it (app.ready()): refused, wrong password, no such database. */
export const ConnectionFailedError = createError(
  'FST_TENANT_RLS_CONNECTION_FAILED',
  'fastify-tenant-rls could not connect to PostgreSQL: %s',
  500
)

/** The system pool's role is unsafe for cross-tenant jobs; raised by app.ready() or the first withSystem call. */
export const UnsafeSystemRoleError = createError(
  'FST_TENANT_RLS_UNSAFE_SYSTEM_ROLE',
  'Refusing the system pool: %s',
  500
)

/** An elevated call (system job, grant, review) lacks who does it or why, or gives them unbounded or malformed. Nothing was sent. */
export const AccountabilityRequiredError = createError(
  'FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED',
  'Elevated access needs an accountable actor and reason: %s',
  400
)

/** A grant request breaks a rule (approver is the operator, lifetime over the maximum, bad tenant id). Nothing was written. */
export const InvalidGrantError = createError(
  'FST_TENANT_RLS_INVALID_GRANT',
  'Invalid grant: %s',
  400
)

/** A token with an actor claim (an impersonation) that no live grant admits, or that the plugin cannot audit. Nothing was read or kept. */
export const ImpersonationRefusedError = createError(
  'FST_TENANT_RLS_IMPERSONATION_REFUSED',
  'Impersonation refused: %s',
  403
)

/** No grant has that id. */
export const GrantNotFoundError = createError(
  'FST_TENANT_RLS_GRANT_NOT_FOUND',
  'No grant %s',
  404
)

/** The grant exists but cannot take this change (already revoked, already reviewed, not break-glass). Nothing was written. */
export const GrantStateError = createError(
  'FST_TENANT_RLS_GRANT_STATE',
  'Grant %s',
  409
)

/** The audit (or EXPLAIN under a tenant) was given an application role that does not exist. */
export const AuditRoleNotFoundError = createError(
  'FST_TENANT_RLS_AUDIT_ROLE_NOT_FOUND',
  'The role "%s" does not exist in this database; give the role the application connects as',
  500
)

/** The audit was given a schema that does not exist: auditing nothing would report a clean database. */
export const AuditSchemaNotFoundError = createError(
  'FST_TENANT_RLS_AUDIT_SCHEMA_NOT_FOUND',
  'The schema "%s" does not exist in this database',
  500
)

/** The startup audit (`startupAudit: 'error'`) found error-level problems on the tables the registered schema declares; raised by app.ready(). */
export const UnsafeSchemaError = createError(
  'FST_TENANT_RLS_UNSAFE_SCHEMA',
  'Refusing to start: %s',
  500
)

/** The tenancy migration found rows whose tenant column is still NULL after the backfill; nothing was changed by the step. */
export const BackfillIncompleteError = createError(
  'FST_TENANT_RLS_BACKFILL_INCOMPLETE',
  'The backfill left %s row(s) of %s without a tenant; map them (or delete them) and run the migration again',
  500
)

/** An export file is malformed, truncated, or its data does not match its manifest (checksum, row count); nothing was imported. */
export const ExportFileInvalidError = createError(
  'FST_TENANT_RLS_EXPORT_INVALID',
  'The export file is invalid; nothing was imported: %s',
  500
)

/** The export was taken from tables that differ from this database's (schema fingerprint, a missing table or column). */
export const SchemaMismatchError = createError(
  'FST_TENANT_RLS_SCHEMA_MISMATCH',
  'The export does not match this database\'s schema; nothing was imported: %s',
  500
)

/** The import target already holds rows of the tenant, and `replace` was not given. */
export const TenantNotEmptyError = createError(
  'FST_TENANT_RLS_TENANT_NOT_EMPTY',
  'The tenant already has rows here (%s); nothing was imported. Import with replace to delete them and import in one transaction',
  500
)

/** The database refused a row of the export: a row of another tenant (the policy's WITH CHECK), a key, a type. */
export const ImportRefusedError = createError(
  'FST_TENANT_RLS_IMPORT_REFUSED',
  'The database refused the import; nothing was imported: %s',
  500
)

/** eraseTenant was called without `confirm`, or with a `confirm` that is not the tenant id retyped. */
export const ErasureNotConfirmedError = createError(
  'FST_TENANT_RLS_ERASURE_NOT_CONFIRMED',
  'Erasing a tenant needs confirm: the tenant id, retyped; nothing was erased',
  500
)

/** After the deletes, rows of the tenant were still there; the erasure was rolled back. */
export const ErasureIncompleteError = createError(
  'FST_TENANT_RLS_ERASURE_INCOMPLETE',
  'Rows of the tenant were left after erasure (%s); nothing was erased',
  500
)

/** The tenant's status (option tenantStatus) is suspended, unknown, or it has no row: nothing of the request ran. */
export const TenantSuspendedError = createError(
  'FST_TENANT_RLS_TENANT_SUSPENDED',
  'The tenant is suspended',
  403
)

/** The tenant is being moved to another database (status 'moving'): nothing of the request ran; retry after the Retry-After delay. */
export const TenantMovingError = createError(
  'FST_TENANT_RLS_TENANT_MOVING',
  'The tenant is being moved; retry later',
  503
)

/** The `route` option's function threw or rejected for the tenant: nothing was sent; retry later. */
export const TenantRouteFailedError = createError(
  'FST_TENANT_RLS_ROUTE_FAILED',
  'The database of the tenant could not be found; retry later',
  503
)

/** With tenantStatus, the status could not be read through a pool's role (no such table or column, no SELECT): at app.ready(), or before a routed pool's first transaction. */
export const TenantStatusUnreadableError = createError(
  'FST_TENANT_RLS_TENANT_STATUS_UNREADABLE',
  'The tenant status cannot be read (%s); run tenantStatusSql on that database or fix the tenantStatus option',
  500
)

/** With placementRouting, the placement table has no row for the tenant: nothing was sent to any tenant database. */
export const TenantNotPlacedError = createError(
  'FST_TENANT_RLS_TENANT_NOT_PLACED',
  'The tenant has no placement',
  403
)

/** With placementRouting, the tenant's placement names a database this process has no pool for: nothing was sent. */
export const PlacementUnknownDatabaseError = createError(
  'FST_TENANT_RLS_PLACEMENT_UNKNOWN_DATABASE',
  'The tenant is placed on database %s, for which this process has no pool',
  500
)

/** moveTenant refused to start or to go on (schema, target not empty, another move under way, ...): the step reached is kept. */
export const MoveRefusedError = createError(
  'FST_TENANT_RLS_MOVE_REFUSED',
  'The tenant cannot be moved: %s',
  500
)

/** The source's rows of the moving tenant differ from the export (a write landed after the export): nothing was erased. */
export const MoveDivergedError = createError(
  'FST_TENANT_RLS_MOVE_DIVERGED',
  'The tenant\'s rows on the source changed during the move (%s); nothing was erased',
  500
)

/** Throws FST_TENANT_RLS_INVALID_OPTION: the one way every register-time check refuses an option. */
export function failOption (message: string): never {
  throw new InvalidOptionError(message)
}
