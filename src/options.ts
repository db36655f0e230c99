// The plugin's options: their types, their defaults, and the one validation pass that runs at
// register time. A wrong option fails `register` with a message that says what to change; it never
// surfaces later as a request error.
import type { FastifyRequest } from 'fastify'
import type { Pool } from 'pg'
import { failOption } from './errors.js'
import { createOwnedPool } from './owned-pool.js'
import type { OwnedPoolConfig } from './owned-pool.js'
import { DEFAULT_AUDIT_TABLE, DEFAULT_GRANTS_TABLE, tableName } from './elevated/tables.js'
import { DEFAULT_ACTOR_CLAIM } from './elevated/impersonation.js'
import type { TableName } from './elevated/tables.js'
import { validateSystemPool } from './elevated/system-pool.js'
import { validateTenantIdType } from './tenant-id.js'
import type { TenantIdType } from './tenant-id.js'
import { validatePublicRoutes } from './public-routes.js'
import type { PublicRoutePredicate, PublicRoutesOptions } from './public-routes.js'
import { DEFAULT_LOCK_TIMEOUT } from './tenant-transaction.js'
import { DEFAULT_PREPARED_ROUTE_QUERIES } from './route-query-names.js'
import { validateSignedContext } from './signed-context/options.js'
import type { ResolvedSignedContext, SignedContextOptions } from './signed-context/options.js'
import { resolvePluginMode, validateTimeout } from './transaction-mode.js'
import type { IsolationLevel, PlanCacheMode, ReadOnlyDefault, RouteMode } from './transaction-mode.js'
import type { SettingsResolver } from './transaction-settings.js'
import type { StartupAuditMode } from './audit/startup-audit.js'
import { validateTenantStatus } from './tenant-status/options.js'
import { ROUTE_CACHE_MS } from './routing/tenant-router.js'
import type { TenantRoute } from './routing/tenant-router.js'
import type { TenantStatusOptions } from './tenant-status/options.js'
import { tenantStatusCheck } from './tenant-status/check.js'
import type { TenantStatusCheck } from './tenant-status/check.js'
import { validateOpenWith } from './citus/set-local.js'
import type { OpenWith } from './citus/set-local.js'

/**
 * Returns the tenant id for a verified request, or null/undefined when it has none. `claims` is
 * what the verifier returned: `request.user` as @fastify/jwt set it (after `formatUser`), or what
 * `verify` resolved to. An error with a 4xx `statusCode` keeps its status and message.
 */
export type TenantResolver = (
  request: FastifyRequest,
  claims: unknown
) => string | null | undefined | Promise<string | null | undefined>

/**
 * Where the plugin's connections come from, exactly one of: your pool (you end it), or a connection
 * string the plugin makes its own pool from (it checks it at ready and ends it on close).
 */
export type TenantPoolSource =
  | {
    /** Pool of the application role (no superuser, no BYPASSRLS). Must set `connectionTimeoutMillis`. */
    pool: Pool
    connectionString?: never
    poolConfig?: never
  }
  | {
    /** Connection string of the application role; the plugin creates, checks and ends the pool. */
    connectionString: string
    /** pg pool settings for that pool (`max`, `connectionTimeoutMillis` default 5000, ...). */
    poolConfig?: OwnedPoolConfig
    pool?: never
  }

/** Authenticates a request the app's own way: resolves to its verified claims, null/undefined or a throw is a 401. */
export type RequestVerifier = (request: FastifyRequest) => Promise<unknown>

/** Options of `app.register(fastifyTenantRls, options)`. */
export type FastifyTenantRlsOptions<TSchema extends Record<string, unknown> = Record<string, unknown>> =
  TenantPoolSource & FastifyTenantRlsSettings<TSchema>

/** Every option but the pool source. */
export interface FastifyTenantRlsSettings<TSchema extends Record<string, unknown> = Record<string, unknown>> {
  /** drizzle schema (tables and relations): types `request.db` and enables `request.db.query.*`. */
  schema?: TSchema
  /** JWT claim that holds the tenant id; a dotted path reads a nested claim. Default `'tenant_id'`. */
  claim?: string
  /** Resolves the tenant from the verified request and its claims; replaces `claim`. */
  resolveTenant?: TenantResolver
  /** Authenticates requests without @fastify/jwt (sessions, API keys, another plugin); `claim` then reads what it resolves to. */
  verify?: RequestVerifier
  /** The @fastify/jwt namespace that verifies tenant requests (`request.<namespace>JwtVerify()`). */
  jwtNamespace?: string
  /** PostgreSQL setting the RLS policies read. Default `'app.current_tenant_id'`. */
  setting?: string
  /**
   * `lock_timeout` of every tenant transaction, in milliseconds: how long a query waits for a lock
   * (a row another request is updating, a table another tenant's route locked) before it fails
   * with SQLSTATE 55P03. 0 waits forever. Default 5000.
   */
  lockTimeout?: number
  /**
   * Keep the plugin's own statements (the opening, the check, the session reset) as named prepared
   * statements of each connection, parsed once per connection instead of once per request.
   * Default true. Set false behind PgBouncer before 1.21 in transaction mode, which cannot keep
   * named statements (1.21+ can, with `max_prepared_statements`).
   */
  preparedStatements?: boolean
  /**
   * How many distinct route query texts (SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES, TABLE)
   * each connection keeps as prepared statements, named automatically: PostgreSQL then parses each
   * text once per connection and can reuse its plan. The least recently used is closed to make
   * room. 0 sends route queries unnamed. Default 100; 0, and only 0, when `preparedStatements` is false.
   */
  preparedRouteQueries?: number
  /**
   * Signed tenant context: the opening sets, beside the tenant, a signature bound to the tenant, the
   * connection's backend pid and a short expiry, and policies that read the tenant through
   * `tenant_rls.current_tenant()` (`signedContextSql`, `createTenantTable({ signedContext: true })`)
   * see no rows for a tenant route SQL set itself. The startup check refuses a database whose
   * policies or function do not make that true. See README "Signed tenant context".
   */
  signedContext?: SignedContextOptions
  /**
   * Name of the request decorator that holds the tenant database. Default `'db'`. Change it when
   * another plugin already decorates `request.db`, and register the same name in
   * `TenantRlsRegister` (`decorator: 'tenantDb'`) so TypeScript knows it.
   */
  decorator?: string
  /** Type of the tenants table's key, and so of every tenant id: `'uuid'`, `'bigint'` or `'slug'`. Default `'uuid'`. */
  tenantIdType?: TenantIdType
  /** Extra transaction-local settings of a request, e.g. `(request) => ({ 'app.user_id': request.user.sub })`. */
  settings?: SettingsResolver
  /** Open tenant transactions READ ONLY: always, never, or for GET/HEAD/OPTIONS/TRACE (`'safe-methods'`). Default false. */
  readOnly?: ReadOnlyDefault
  /**
   * Send each query of a route alone, in one round trip, as its own READ ONLY transaction (see the
   * route option `singleRoundTrip`): always, never, or for GET/HEAD/OPTIONS/TRACE (`'safe-methods'`).
   * Routes can turn it off with `config: { tenant: { singleRoundTrip: false } }`. Default false.
   */
  singleRoundTrip?: ReadOnlyDefault
  /** Isolation level of every tenant transaction. Default: the server's (read committed). */
  isolationLevel?: IsolationLevel
  /** `statement_timeout` of every tenant transaction in milliseconds (0: none). Default: the server's. */
  statementTimeout?: number
  /** `idle_in_transaction_session_timeout` of every tenant transaction in milliseconds (0: none). Default: the server's. */
  idleInTransactionSessionTimeout?: number
  /**
   * `plan_cache_mode` of every tenant transaction (see the route option of that name): with
   * `'force_generic_plan'` a prepared route query is planned once per connection instead of on every
   * execution where PostgreSQL's `'auto'` keeps custom plans. Default: the server's.
   */
  planCacheMode?: PlanCacheMode
  /**
   * Routes that answer without a token, decided once per route at startup: by URL prefix, by a
   * predicate, or both. Routes with only the OPTIONS method (CORS preflights) are always public.
   */
  publicRoutes?: PublicRoutesOptions
  /**
   * At `ready`, the audit's error-level table and key rules on the tables `schema` declares with
   * `tenantTable` (see
   * "Auditing a database"): `'warn'` logs each finding once, `'error'` refuses to start, `'off'`
   * skips it. Default `'warn'`. The pool role's check refuses an unsafe role whatever this says.
   */
  startupAudit?: StartupAuditMode
  /**
   * A pg.Pool of the dedicated system role, for `app.withSystem` (cross-tenant jobs). Checked at
   * ready: no superuser, BYPASSRLS, no membership with the app role either way, no DELETE or
   * TRUNCATE on an RLS table, no table owned, no CREATE in a schema.
   */
  systemPool?: Pool
  /** Where `app.withSystem` records its jobs and the plugin its impersonated requests. Default `'public.tenant_rls_audit'`. */
  auditTable?: string
  /**
   * The claim (a dotted path) naming the support operator who acts as the token's tenant. A token
   * that carries it is an impersonation: admitted only under a live grant (403 otherwise), READ ONLY
   * unless the grant allows writes, recorded in the audit trail through `systemPool`. Default
   * `'act.sub'` (RFC 8693's actor claim).
   */
  actorClaim?: string
  /** Where the support grants are, for the admission of impersonated requests. Default `'public.tenant_rls_grants'`. */
  grantsTable?: string
  /**
   * Check the tenant's status on every tenant transaction, inside the opening (no extra round
   * trip): a suspended tenant (or one without a row) gets 403 FST_TENANT_RLS_TENANT_SUSPENDED, a
   * moving one 503 FST_TENANT_RLS_TENANT_MOVING with Retry-After, and the route's first query never
   * runs. Set the table up with `tenantStatusSql`. See README "Erasing and suspending".
   */
  tenantStatus?: TenantStatusOptions
  /**
   * Which database holds each tenant: returns the app role's pool there (sync or async). Asked once
   * per tenant and cached (10,000 tenants, 30 seconds); a pool it names is checked like `pool`
   * before its first transaction. Default: every tenant on `pool`. See README "Routing tenants".
   */
  route?: TenantRoute
  /** The pools `route` can return, checked at ready like `pool` (others are checked on first use). */
  routedPools?: Pool[]
  /**
   * How long `route`'s answer for a tenant is kept, in milliseconds (0: asked on every transaction).
   * A moved tenant is found on its new database within this bound. Default 30000.
   */
  routeCacheMs?: number
  /**
   * How the opening sets the tenant: `'set-config'` (default) calls `set_config` with the id as a
   * bound parameter; `'set-local'` sends `SET LOCAL <setting> TO '<id>'` (the id checked again
   * against `tenantIdType`, sent unnamed), which Citus passes on to its workers and `set_config` is
   * not. Still in the first query's round trip and transaction-local. Refused with
   * `singleRoundTrip`, `signedContext` and `settings`. See README "Opening with SET LOCAL".
   */
  openWith?: OpenWith
}

/** Options after defaults and validation, shared by the HTTP hooks and `withTenant`. */
export interface ResolvedOptions {
  pool: Pool
  /** The plugin created the pool from `connectionString`, so the plugin ends it. */
  ownsPool: boolean
  schema: Record<string, unknown> | undefined
  claimPath: readonly string[]
  resolveTenant: TenantResolver | undefined
  verify: RequestVerifier | undefined
  jwtNamespace: string | undefined
  setting: string
  lockTimeout: number
  preparedStatements: boolean
  preparedRouteQueries: number
  signedContext: ResolvedSignedContext | undefined
  decorator: string
  settings: SettingsResolver | undefined
  tenantIdType: TenantIdType
  /** Transaction modes of routes that do not override them (and the defaults of app.withTenant). */
  routeMode: RouteMode
  isPublicRoute: PublicRoutePredicate
  /** The system role's pool, when app.withSystem is enabled. */
  systemPool: Pool | undefined
  auditTable: TableName
  startupAudit: StartupAuditMode
  actorClaimPath: readonly string[]
  grantsTable: TableName
  /** The opening's status check, when the tenantStatus option is given. */
  tenantStatus: TenantStatusCheck | undefined
  route: TenantRoute | undefined
  routedPools: Pool[]
  routeCacheMs: number
  openWith: OpenWith
}

export const DEFAULT_CLAIM = 'tenant_id'
export const DEFAULT_SETTING = 'app.current_tenant_id'
export const DEFAULT_DECORATOR = 'db'

// A custom PostgreSQL setting is two or more identifiers joined by dots. Only plain lower-case
// identifiers are accepted, so the name is safe to write into a multi-statement message as a literal.
export const SETTING_NAME = /^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$/
const CLAIM_SEGMENT = /^[A-Za-z0-9_:$-]+$/
// A plain identifier, so `request.<name>` works in route code as written.
const DECORATOR_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/
// What @fastify/jwt accepts as a namespace and turns into a method name (`${namespace}JwtVerify`).
const JWT_NAMESPACE = /^[A-Za-z_$][A-Za-z0-9_$]*$/
// Every register option (the pool source and FastifyTenantRlsSettings), as a record the compiler
// holds to those types: an option added there and not here (or listed here and not there) fails the
// build, so an unknown option is refused by name and a known one never is.
const OPTION_NAMES: Readonly<Record<keyof TenantPoolSource | keyof FastifyTenantRlsSettings, true>> = {
  pool: true,
  connectionString: true,
  poolConfig: true,
  schema: true,
  claim: true,
  resolveTenant: true,
  verify: true,
  jwtNamespace: true,
  setting: true,
  lockTimeout: true,
  preparedStatements: true,
  preparedRouteQueries: true,
  signedContext: true,
  decorator: true,
  tenantIdType: true,
  settings: true,
  readOnly: true,
  singleRoundTrip: true,
  isolationLevel: true,
  statementTimeout: true,
  idleInTransactionSessionTimeout: true,
  planCacheMode: true,
  publicRoutes: true,
  startupAudit: true,
  systemPool: true,
  auditTable: true,
  actorClaim: true,
  grantsTable: true,
  tenantStatus: true,
  route: true,
  routedPools: true,
  routeCacheMs: true,
  openWith: true
}
const KNOWN_OPTIONS: ReadonlySet<string> = new Set(Object.keys(OPTION_NAMES))

/** Checks a setting name; shared with `withTenant`, which takes the same option. */
export function validateSetting (setting: unknown): string {
  if (typeof setting !== 'string' || !SETTING_NAME.test(setting)) {
    failOption(`setting must be a custom PostgreSQL setting such as '${DEFAULT_SETTING}' (lower-case identifiers joined by dots), got ${JSON.stringify(setting)}`)
  }
  return setting
}

/** The most route query texts a connection may keep prepared: each costs server memory per connection. */
export const MAX_PREPARED_ROUTE_QUERIES = 10000

/**
 * Checks the two prepared-statement options together; shared with `withTenant`, which takes the
 * same. Route queries cannot be named where the plugin's own statements cannot (a pooler without
 * prepared statements), so asking for both is refused rather than quietly ignored.
 */
export function validatePreparation (given: { preparedStatements?: unknown, preparedRouteQueries?: unknown }): { preparedStatements: boolean, preparedRouteQueries: number } {
  const { preparedStatements = true, preparedRouteQueries } = given
  if (typeof preparedStatements !== 'boolean') failOption(`preparedStatements must be true or false, got ${JSON.stringify(preparedStatements)}`)
  if (preparedRouteQueries === undefined) return { preparedStatements, preparedRouteQueries: preparedStatements ? DEFAULT_PREPARED_ROUTE_QUERIES : 0 }
  if (typeof preparedRouteQueries !== 'number' || !Number.isInteger(preparedRouteQueries) || preparedRouteQueries < 0 || preparedRouteQueries > MAX_PREPARED_ROUTE_QUERIES) {
    failOption(`preparedRouteQueries must be an integer from 0 (off) to ${MAX_PREPARED_ROUTE_QUERIES}, got ${JSON.stringify(preparedRouteQueries)}`)
  }
  if (!preparedStatements && preparedRouteQueries > 0) failOption('preparedRouteQueries needs preparedStatements: with preparedStatements false (a pooler without prepared statements) it must be 0 or left out')
  return { preparedStatements, preparedRouteQueries }
}

/** Checks the plugin-wide lock timeout in milliseconds. */
export function validateLockTimeout (lockTimeout: unknown): number {
  return validateTimeout('lockTimeout', lockTimeout, '0 waits forever')
}

/** Checks that `pool` is a pg.Pool that cannot make a request wait forever. */
export function validatePool (pool: unknown): Pool {
  if (pool === null || typeof pool !== 'object' || typeof (pool as Pool).connect !== 'function') {
    failOption('pool is required and must be a pg.Pool for the application role')
  }
  const timeout = (pool as Pool).options?.connectionTimeoutMillis
  // pg's default of 0 waits for a free connection forever: an exhausted pool would hang requests.
  if (typeof timeout !== 'number' || !(timeout > 0)) {
    failOption('pool must set connectionTimeoutMillis (for example 5000), so an exhausted pool answers 503 instead of hanging')
  }
  return pool as Pool
}

/** Checks the name of the request decorator; whether it is free is for the plugin to see at register. */
export function validateDecorator (decorator: unknown): string {
  if (typeof decorator !== 'string' || !DECORATOR_NAME.test(decorator)) {
    failOption(`decorator must be a property name such as 'tenantDb' (letters, digits, _ and $), got ${JSON.stringify(decorator)}`)
  }
  return decorator
}

/**
 * Checks that exactly one pool source is given, and returns whether the plugin will own the pool.
 * Two sources would leave it unclear which pool tenants' transactions run on, and who ends it.
 */
export function validatePoolSource (pool: unknown, connectionString: unknown, poolConfig: unknown): boolean {
  if (pool !== undefined && connectionString !== undefined) {
    failOption('give either pool (a pg.Pool you create and end) or connectionString (the plugin creates, checks and ends the pool), not both')
  }
  if (pool !== undefined) {
    if (poolConfig !== undefined) failOption('poolConfig applies only to the pool the plugin creates from connectionString; set those options on your own pool')
    return false
  }
  if (connectionString === undefined) {
    failOption('pool or connectionString is required: a pg.Pool of the application role, or its connection string')
  }
  if (typeof connectionString !== 'string' || connectionString === '') {
    failOption('connectionString must be the non-empty connection string of the application role, e.g. postgres://app_login:secret@db:5432/app')
  }
  if (poolConfig !== undefined) {
    if (poolConfig === null || typeof poolConfig !== 'object' || Array.isArray(poolConfig)) {
      failOption('poolConfig must be an object of pg pool settings such as { max: 20, connectionTimeoutMillis: 5000 }')
    }
    if ('connectionString' in poolConfig) failOption('poolConfig must not carry a connectionString: give it as the connectionString option')
  }
  return true
}

/** Checks a drizzle schema object (tables and relations), when one is given. */
export function validateSchema (schema: unknown): Record<string, unknown> | undefined {
  if (schema === undefined) return undefined
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
    failOption('schema must be the object of drizzle tables and relations, e.g. `import * as schema from "./schema.js"`')
  }
  return schema as Record<string, unknown>
}

/** Checks the choice of verifier; whether it exists on the instance is checked by authentication.ts. */
function validateVerifier (verify: unknown, jwtNamespace: unknown): Pick<ResolvedOptions, 'verify' | 'jwtNamespace'> {
  if (verify !== undefined && typeof verify !== 'function') {
    failOption('verify must be a function async (request) => claims, resolving to null/undefined (or throwing) when the request is not authenticated')
  }
  if (jwtNamespace !== undefined && (typeof jwtNamespace !== 'string' || !JWT_NAMESPACE.test(jwtNamespace))) {
    failOption(`jwtNamespace must be the namespace given to @fastify/jwt, such as 'api', got ${JSON.stringify(jwtNamespace)}`)
  }
  if (verify !== undefined && jwtNamespace !== undefined) {
    failOption('give either verify or jwtNamespace, not both: verify replaces @fastify/jwt')
  }
  return { verify: verify as RequestVerifier | undefined, jwtNamespace: jwtNamespace as string | undefined }
}

function parseClaimPath (claim: unknown, option = 'claim'): readonly string[] {
  if (typeof claim !== 'string') failOption(`${option} must be a string such as 'tenant_id' or 'org.id', got ${typeof claim}`)
  const path = claim.split('.')
  if (!path.every((segment) => CLAIM_SEGMENT.test(segment))) {
    failOption(`${option} must be a claim name or a dotted path of names such as 'org.id', got ${JSON.stringify(claim)}`)
  }
  return path
}

function validateStartupAudit (mode: unknown): StartupAuditMode {
  if (mode !== 'error' && mode !== 'warn' && mode !== 'off') failOption(`startupAudit must be 'error', 'warn' or 'off', got ${JSON.stringify(mode)}`)
  return mode
}

function validateRouting (route: unknown, routedPools: unknown): Pick<ResolvedOptions, 'route' | 'routedPools'> {
  if (route !== undefined && typeof route !== 'function') failOption('route must be a function (tenantId) => pg.Pool, sync or async, naming the pool of the database that holds the tenant')
  if (routedPools === undefined) return { route: route as TenantRoute | undefined, routedPools: [] }
  if (route === undefined) failOption('routedPools needs route: they are the pools route may return')
  if (!Array.isArray(routedPools)) failOption('routedPools must be an array of pg.Pool')
  return { route: route as TenantRoute, routedPools: routedPools.map(validatePool) }
}

function validateRouteCacheMs (cacheMs: unknown, route: unknown): number {
  if (cacheMs === undefined) return ROUTE_CACHE_MS
  if (route === undefined) failOption('routeCacheMs needs route: it bounds how long route\'s answers are kept')
  // Longer than the default would only lengthen the wait a move must make before erasing the source.
  if (typeof cacheMs !== 'number' || !Number.isInteger(cacheMs) || cacheMs < 0 || cacheMs > ROUTE_CACHE_MS) failOption(`routeCacheMs must be a whole number of milliseconds from 0 to ${ROUTE_CACHE_MS}, got ${JSON.stringify(cacheMs)}`)
  return cacheMs
}

function checkOf (status: ReturnType<typeof validateTenantStatus>): TenantStatusCheck | undefined {
  return status === undefined ? undefined : tenantStatusCheck(status)
}

/** Validates the user's options once, at register time, and fills in the defaults. */
export function resolveOptions (options: unknown): ResolvedOptions {
  if (options === null || typeof options !== 'object') failOption('options must be an object with `pool` or `connectionString`')
  const given = options as Record<string, unknown>
  // A misspelt option (say `claims`) would otherwise be ignored and a default used silently.
  const unknown = Object.keys(given).filter((key) => !KNOWN_OPTIONS.has(key))
  if (unknown.length > 0) failOption(`unknown option(s) ${unknown.join(', ')}; known options are ${[...KNOWN_OPTIONS].join(', ')}`)

  const { pool, connectionString, poolConfig, schema, claim = DEFAULT_CLAIM, resolveTenant, verify, jwtNamespace, setting = DEFAULT_SETTING, lockTimeout = DEFAULT_LOCK_TIMEOUT, decorator = DEFAULT_DECORATOR, publicRoutes } = given
  if (resolveTenant !== undefined && typeof resolveTenant !== 'function') {
    failOption('resolveTenant must be a function (request) => tenantId | null, sync or async')
  }
  if (resolveTenant !== undefined && given.claim !== undefined) {
    failOption('give either claim or resolveTenant, not both: resolveTenant replaces claim')
  }
  if (given.settings !== undefined && typeof given.settings !== 'function') {
    failOption("settings must be a function (request) => ({ 'app.user_id': … }), sync or async")
  }
  const checkedLockTimeout = validateLockTimeout(lockTimeout)
  const ownsPool = validatePoolSource(pool, connectionString, poolConfig)
  const resolved = {
    schema: validateSchema(schema),
    claimPath: parseClaimPath(claim),
    resolveTenant: resolveTenant as TenantResolver | undefined,
    ...validateVerifier(verify, jwtNamespace),
    setting: validateSetting(setting),
    lockTimeout: checkedLockTimeout,
    ...validatePreparation(given),
    signedContext: given.signedContext === undefined ? undefined : validateSignedContext(given.signedContext),
    decorator: validateDecorator(decorator),
    settings: given.settings as SettingsResolver | undefined,
    tenantIdType: validateTenantIdType(given.tenantIdType),
    routeMode: resolvePluginMode(given, checkedLockTimeout),
    isPublicRoute: validatePublicRoutes(publicRoutes),
    systemPool: given.systemPool === undefined ? undefined : validateSystemPool(given.systemPool, pool),
    auditTable: tableName('auditTable', given.auditTable, DEFAULT_AUDIT_TABLE),
    startupAudit: validateStartupAudit(given.startupAudit ?? 'warn'),
    actorClaimPath: parseClaimPath(given.actorClaim ?? DEFAULT_ACTOR_CLAIM, 'actorClaim'),
    grantsTable: tableName('grantsTable', given.grantsTable, DEFAULT_GRANTS_TABLE),
    tenantStatus: checkOf(validateTenantStatus(given.tenantStatus)),
    ...validateRouting(given.route, given.routedPools),
    routeCacheMs: validateRouteCacheMs(given.routeCacheMs, given.route),
    openWith: validateOpenWith(given)
  }
  // Created last, once every other option is known to be good (creating one connects nowhere yet).
  return { ...resolved, ownsPool, pool: validatePool(ownsPool ? createOwnedPool(connectionString as string, poolConfig) : pool) }
}
