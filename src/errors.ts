// Every error the plugin raises, created once so each has a stable code and HTTP status.
// The README's error table lists the same codes; keep the two in step.
import createError from '@fastify/error'

/** The request carries no valid JWT (missing, malformed, badly signed, expired, not yet valid). */
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

/** The token names a tenant, but not as a canonical UUID. */
export const TenantInvalidError = createError(
  'FST_TENANT_RLS_TENANT_INVALID',
  'The tenant id is not a canonical UUID',
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

/** Route code changed the tenant setting inside the transaction; nothing was committed. */
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

/** COMMIT failed on a constraint or a serialization conflict; nothing was committed. */
export const CommitConflictError = createError(
  'FST_TENANT_RLS_COMMIT_CONFLICT',
  'The transaction conflicts with other data; nothing was committed',
  409
)

/** COMMIT failed for any other reason (connection lost, aborted transaction); nothing was committed. */
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
