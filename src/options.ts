// The plugin's options: their types, their defaults, and the one validation pass that runs at
// register time. A wrong option fails `register` with a message that says what to change; it never
// surfaces later as a request error.
import type { FastifyRequest } from 'fastify'
import type { Pool } from 'pg'
import { InvalidOptionError } from './errors.js'
import { validatePublicRoutes } from './public-routes.js'
import type { PublicRoutePredicate, PublicRoutesOptions } from './public-routes.js'
import { DEFAULT_LOCK_TIMEOUT } from './tenant-transaction.js'

/** Returns the tenant id for a verified request, or null/undefined when it has none. */
export type TenantResolver = (
  request: FastifyRequest
) => string | null | undefined | Promise<string | null | undefined>

/** Options of `app.register(fastifyTenantRls, options)`. */
export interface FastifyTenantRlsOptions<TSchema extends Record<string, unknown> = Record<string, unknown>> {
  /** Pool of the application role (no superuser, no BYPASSRLS). Must set `connectionTimeoutMillis`. */
  pool: Pool
  /** drizzle schema (tables and relations): types `request.db` and enables `request.db.query.*`. */
  schema?: TSchema
  /** JWT claim that holds the tenant id; a dotted path reads a nested claim. Default `'tenant_id'`. */
  claim?: string
  /** Resolves the tenant from the verified request (`request.user` is set); replaces `claim`. */
  resolveTenant?: TenantResolver
  /** PostgreSQL setting the RLS policies read. Default `'app.current_tenant_id'`. */
  setting?: string
  /**
   * `lock_timeout` of every tenant transaction, in milliseconds: how long a query waits for a lock
   * (a row another request is updating, a table another tenant's route locked) before it fails
   * with SQLSTATE 55P03. 0 waits forever. Default 5000.
   */
  lockTimeout?: number
  /**
   * Routes that answer without a token, decided once per route at startup: by URL prefix, by a
   * predicate, or both. Routes with only the OPTIONS method (CORS preflights) are always public.
   */
  publicRoutes?: PublicRoutesOptions
}

/** Options after defaults and validation, shared by the HTTP hooks and `withTenant`. */
export interface ResolvedOptions {
  pool: Pool
  schema: Record<string, unknown> | undefined
  claimPath: readonly string[]
  resolveTenant: TenantResolver | undefined
  setting: string
  lockTimeout: number
  isPublicRoute: PublicRoutePredicate
}

export const DEFAULT_CLAIM = 'tenant_id'
export const DEFAULT_SETTING = 'app.current_tenant_id'

// A custom PostgreSQL setting is two or more identifiers joined by dots. Only plain lower-case
// identifiers are accepted, so the name is safe to write into a multi-statement message as a literal.
const SETTING_NAME = /^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$/
const CLAIM_SEGMENT = /^[A-Za-z0-9_:$-]+$/
const KNOWN_OPTIONS = new Set(['pool', 'schema', 'claim', 'resolveTenant', 'setting', 'lockTimeout', 'publicRoutes'])

function fail (message: string): never {
  throw new InvalidOptionError(message)
}

/** Checks a setting name; shared with `withTenant`, which takes the same option. */
export function validateSetting (setting: unknown): string {
  if (typeof setting !== 'string' || !SETTING_NAME.test(setting)) {
    fail(`setting must be a custom PostgreSQL setting such as '${DEFAULT_SETTING}' (lower-case identifiers joined by dots), got ${JSON.stringify(setting)}`)
  }
  return setting
}

/** Checks a lock timeout in milliseconds; shared with `withTenant`, which takes the same option. */
export function validateLockTimeout (lockTimeout: unknown): number {
  // PostgreSQL's own limit for a timeout setting is INT_MAX milliseconds.
  if (typeof lockTimeout !== 'number' || !Number.isInteger(lockTimeout) || lockTimeout < 0 || lockTimeout > 2147483647) {
    fail(`lockTimeout must be a whole number of milliseconds (0 waits forever), got ${JSON.stringify(lockTimeout)}`)
  }
  return lockTimeout
}

/** Checks that `pool` is a pg.Pool that cannot make a request wait forever. */
export function validatePool (pool: unknown): Pool {
  if (pool === null || typeof pool !== 'object' || typeof (pool as Pool).connect !== 'function') {
    fail('pool is required and must be a pg.Pool for the application role')
  }
  const timeout = (pool as Pool).options?.connectionTimeoutMillis
  // pg's default of 0 waits for a free connection forever: an exhausted pool would hang requests.
  if (typeof timeout !== 'number' || !(timeout > 0)) {
    fail('pool must set connectionTimeoutMillis (for example 5000), so an exhausted pool answers 503 instead of hanging')
  }
  return pool as Pool
}

/** Checks a drizzle schema object (tables and relations), when one is given. */
export function validateSchema (schema: unknown): Record<string, unknown> | undefined {
  if (schema === undefined) return undefined
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
    fail('schema must be the object of drizzle tables and relations, e.g. `import * as schema from "./schema.js"`')
  }
  return schema as Record<string, unknown>
}

function parseClaimPath (claim: unknown): readonly string[] {
  if (typeof claim !== 'string') fail(`claim must be a string such as 'tenant_id' or 'org.id', got ${typeof claim}`)
  const path = claim.split('.')
  if (!path.every((segment) => CLAIM_SEGMENT.test(segment))) {
    fail(`claim must be a claim name or a dotted path of names such as 'org.id', got ${JSON.stringify(claim)}`)
  }
  return path
}

/** Validates the user's options once, at register time, and fills in the defaults. */
export function resolveOptions (options: unknown): ResolvedOptions {
  if (options === null || typeof options !== 'object') fail('options must be an object with at least `pool`')
  const given = options as Record<string, unknown>
  // A misspelt option (say `claims`) would otherwise be ignored and a default used silently.
  const unknown = Object.keys(given).filter((key) => !KNOWN_OPTIONS.has(key))
  if (unknown.length > 0) fail(`unknown option(s) ${unknown.join(', ')}; known options are ${[...KNOWN_OPTIONS].join(', ')}`)

  const { pool, schema, claim = DEFAULT_CLAIM, resolveTenant, setting = DEFAULT_SETTING, lockTimeout = DEFAULT_LOCK_TIMEOUT, publicRoutes } = given
  if (resolveTenant !== undefined && typeof resolveTenant !== 'function') {
    fail('resolveTenant must be a function (request) => tenantId | null, sync or async')
  }
  if (resolveTenant !== undefined && given.claim !== undefined) {
    fail('give either claim or resolveTenant, not both: resolveTenant replaces claim')
  }
  return {
    pool: validatePool(pool),
    schema: validateSchema(schema),
    claimPath: parseClaimPath(claim),
    resolveTenant: resolveTenant as TenantResolver | undefined,
    setting: validateSetting(setting),
    lockTimeout: validateLockTimeout(lockTimeout),
    isPublicRoute: validatePublicRoutes(publicRoutes)
  }
}
