// How a tenant transaction runs, beyond its tenant: access mode, isolation level and timeouts.
// Plugin-wide defaults come from the register options, per-route overrides from
// `config: { tenant: { ... } }`; both are validated once (at register, and at onRoute for each
// route), so a request only picks between values already checked. Every one of them is applied by
// the opening that rides with the first query (tenant-transaction.ts): no round trip of its own.
import { failOption } from './errors.js'

/** Isolation levels, spelt as drizzle spells them. PostgreSQL runs READ UNCOMMITTED as READ COMMITTED, so it is not offered. */
export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable'

/** PostgreSQL's `plan_cache_mode` values. */
export type PlanCacheMode = 'auto' | 'force_generic_plan' | 'force_custom_plan'

/** Per-route transaction options: `config: { tenant: { readOnly: true } }`. */
export interface TenantRouteOptions {
  /** Open the transaction READ ONLY: any write fails with FST_TENANT_RLS_READ_ONLY_TRANSACTION (403). */
  readOnly?: boolean
  /** `BEGIN ISOLATION LEVEL …`. Default: the server's (read committed). */
  isolationLevel?: IsolationLevel
  /** `statement_timeout` of the transaction in milliseconds (0: none). Default: the server's. */
  statementTimeout?: number
  /** `lock_timeout` of the transaction in milliseconds (0 waits forever). Default: the plugin's `lockTimeout`. */
  lockTimeout?: number
  /** `idle_in_transaction_session_timeout` in milliseconds (0: none). Default: the server's. */
  idleInTransactionSessionTimeout?: number
  /**
   * `plan_cache_mode` of the transaction: how PostgreSQL plans the route's prepared queries (route
   * queries are prepared per connection by default). `'force_generic_plan'` plans each query once
   * per connection; PostgreSQL's own `'auto'` plans anew on every execution a query whose generic
   * plan looks costlier, as one that binds its `LIMIT` does. Under RLS the tenant comes from the
   * policy, never a parameter, so a custom plan can specialise only on the route's own parameters.
   * Default: the server's (`'auto'` unless configured).
   */
  planCacheMode?: PlanCacheMode
  /**
   * No transaction across queries: each query of the route travels alone, in one round trip, as its
   * own READ ONLY transaction with the tenant setting, and the connection is released between
   * queries. Queries only (SELECT, WITH, VALUES, TABLE): other statements are refused, writes fail.
   * Each query sees its own snapshot, as statements of a READ COMMITTED transaction do. Default false.
   */
  singleRoundTrip?: boolean
}

/** Plugin-wide `readOnly`: also `'safe-methods'`, read-only for GET, HEAD, OPTIONS and TRACE only (as PostgREST does for GET/HEAD). */
export type ReadOnlyDefault = boolean | 'safe-methods'

/** What one transaction is opened with; undefined timeouts and isolation keep the server's own. */
export interface TransactionMode {
  readOnly: boolean
  singleRoundTrip: boolean
  isolationLevel: IsolationLevel | undefined
  statementTimeout: number | undefined
  lockTimeout: number
  idleInTransactionSessionTimeout: number | undefined
  planCacheMode: PlanCacheMode | undefined
}

/** A route's resolved options: a mode, but the access mode may still depend on the request method. */
export interface RouteMode extends Omit<TransactionMode, 'readOnly' | 'singleRoundTrip'> {
  readOnly: ReadOnlyDefault
  singleRoundTrip: ReadOnlyDefault
}

const ISOLATION_LEVELS: ReadonlySet<string> = new Set<IsolationLevel>(['read committed', 'repeatable read', 'serializable'])
const PLAN_CACHE_MODES: ReadonlySet<string> = new Set<PlanCacheMode>(['auto', 'force_generic_plan', 'force_custom_plan'])
// RFC 9110's safe methods: a request with one of them is not meant to change anything.
const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])
const ROUTE_KEYS: ReadonlySet<string> = new Set(['readOnly', 'isolationLevel', 'statementTimeout', 'lockTimeout', 'idleInTransactionSessionTimeout', 'planCacheMode', 'singleRoundTrip'])
// PostgreSQL's own limit for a timeout setting is INT_MAX milliseconds.
const MAX_TIMEOUT = 2147483647

/** Checks a timeout in milliseconds, named `name` in the message. */
export function validateTimeout (name: string, value: unknown, zero: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_TIMEOUT) {
    failOption(`${name} must be a whole number of milliseconds (${zero}), got ${JSON.stringify(value)}`)
  }
  return value
}

function optionalTimeout (name: string, value: unknown): number | undefined {
  return value === undefined ? undefined : validateTimeout(name, value, '0 disables it')
}

function validateIsolationLevel (where: string, value: unknown): IsolationLevel | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !ISOLATION_LEVELS.has(value)) {
    failOption(`${where}isolationLevel must be one of ${[...ISOLATION_LEVELS].map((level) => `'${level}'`).join(', ')}, got ${JSON.stringify(value)}`)
  }
  return value as IsolationLevel
}

function validatePlanCacheMode (where: string, value: unknown): PlanCacheMode | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !PLAN_CACHE_MODES.has(value)) {
    failOption(`${where}planCacheMode must be one of ${[...PLAN_CACHE_MODES].map((mode) => `'${mode}'`).join(', ')}, got ${JSON.stringify(value)}`)
  }
  return value as PlanCacheMode
}

function validateByMethod (name: string, value: unknown, allowSafeMethods: boolean): ReadOnlyDefault {
  if (typeof value === 'boolean' || (allowSafeMethods && value === 'safe-methods')) return value
  failOption(`${name} must be ${allowSafeMethods ? "true, false or 'safe-methods'" : 'true or false'}, got ${JSON.stringify(value)}`)
}

// Single round trip means read only: asking for both the mode and a read-write transaction in the
// same place is a contradiction, refused rather than settled silently one way.
function refuseReadWriteSingleRoundTrip (where: string, given: Record<string, unknown>): void {
  if (given.readOnly === false && given.singleRoundTrip !== undefined && given.singleRoundTrip !== false) {
    failOption(`${where}singleRoundTrip runs every query READ ONLY: it cannot be combined with readOnly: false`)
  }
}

/** The plugin-wide defaults, from the register options (lockTimeout already validated). */
export function resolvePluginMode (given: Record<string, unknown>, lockTimeout: number): RouteMode {
  refuseReadWriteSingleRoundTrip('', given)
  return {
    readOnly: given.readOnly === undefined ? false : validateByMethod('readOnly', given.readOnly, true),
    singleRoundTrip: given.singleRoundTrip === undefined ? false : validateByMethod('singleRoundTrip', given.singleRoundTrip, true),
    isolationLevel: validateIsolationLevel('', given.isolationLevel),
    statementTimeout: optionalTimeout('statementTimeout', given.statementTimeout),
    lockTimeout,
    idleInTransactionSessionTimeout: optionalTimeout('idleInTransactionSessionTimeout', given.idleInTransactionSessionTimeout),
    planCacheMode: validatePlanCacheMode('', given.planCacheMode)
  }
}

/**
 * A route's options over the plugin's defaults. `tenant` is the route's `config.tenant`: undefined
 * or true keep the defaults, an object overrides them key by key. `route` names it in messages.
 */
export function resolveRouteMode (tenant: unknown, defaults: RouteMode, route: string): RouteMode {
  if (tenant === undefined || typeof tenant === 'boolean') return defaults
  return overrideMode(tenant, defaults, `route ${route}: config.tenant`, ' (or false to opt out)')
}

/** `given` (an object of TenantRouteOptions, unknown keys refused) over `defaults`; `name` names it in messages. */
export function overrideMode (given: unknown, defaults: RouteMode, name: string, otherwise = ''): RouteMode {
  if (given === null || typeof given !== 'object' || Array.isArray(given)) {
    failOption(`${name} must be an object of transaction options (${[...ROUTE_KEYS].join(', ')})${otherwise}, got ${JSON.stringify(given)}`)
  }
  const unknown = Object.keys(given).filter((key) => !ROUTE_KEYS.has(key))
  if (unknown.length > 0) failOption(`${name} has unknown key(s) ${unknown.join(', ')}; known keys are ${[...ROUTE_KEYS].join(', ')}`)
  return withOverrides(given as Record<string, unknown>, defaults, `${name}.`)
}

function withOverrides (given: Record<string, unknown>, defaults: RouteMode, where: string): RouteMode {
  refuseReadWriteSingleRoundTrip(where, given)
  return {
    readOnly: given.readOnly === undefined ? defaults.readOnly : validateByMethod(`${where}readOnly`, given.readOnly, false),
    singleRoundTrip: given.singleRoundTrip === undefined ? defaults.singleRoundTrip : validateByMethod(`${where}singleRoundTrip`, given.singleRoundTrip, false),
    isolationLevel: validateIsolationLevel(where, given.isolationLevel) ?? defaults.isolationLevel,
    statementTimeout: optionalTimeout(`${where}statementTimeout`, given.statementTimeout) ?? defaults.statementTimeout,
    lockTimeout: given.lockTimeout === undefined ? defaults.lockTimeout : validateTimeout(`${where}lockTimeout`, given.lockTimeout, '0 waits forever'),
    idleInTransactionSessionTimeout: optionalTimeout(`${where}idleInTransactionSessionTimeout`, given.idleInTransactionSessionTimeout) ?? defaults.idleInTransactionSessionTimeout,
    planCacheMode: validatePlanCacheMode(where, given.planCacheMode) ?? defaults.planCacheMode
  }
}

function byMethod (value: ReadOnlyDefault, method: string): boolean {
  return typeof value === 'boolean' ? value : SAFE_METHODS.has(method)
}

/** The mode of one transaction: `'safe-methods'` is decided by the request's method; single round trip is read only. */
export function transactionModeFor (mode: RouteMode, method: string): TransactionMode {
  const singleRoundTrip = byMethod(mode.singleRoundTrip, method)
  const readOnly = singleRoundTrip || byMethod(mode.readOnly, method)
  // The usual case (no 'safe-methods', nothing to adjust) allocates nothing per transaction.
  if (mode.singleRoundTrip === singleRoundTrip && mode.readOnly === readOnly) return mode as TransactionMode
  return { ...mode, singleRoundTrip, readOnly }
}
