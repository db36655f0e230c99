// Runs a function inside one tenant's transaction, for work outside an HTTP request (queues,
// cron jobs, scripts). It uses the same TenantTransaction as requests: commit when the function
// resolves, roll back when it throws, the connection released exactly once either way.
import type { Pool } from 'pg'
import { InvalidOptionError, TenantInvalidError } from './errors.js'
import { DEFAULT_SETTING, validatePool, validatePreparation, validateSchema, validateSetting } from './options.js'
import { createDatabaseFactory } from './tenant-database.js'
import type { DatabaseFactory, RegisteredSchema, TenantDatabase } from './tenant-database.js'
import { checkPoolRole } from './safety-checks.js'
import { checkSignedContext, describeSignedContextProblem } from './signed-context/inspection.js'
import type { SignedContextProblem } from './signed-context/inspection.js'
import { validateSignedContext } from './signed-context/options.js'
import type { ResolvedSignedContext, SignedContextOptions } from './signed-context/options.js'
import { normalizeTenantId, validateTenantIdType } from './tenant-id.js'
import type { TenantIdType } from './tenant-id.js'
import { DEFAULT_LOCK_TIMEOUT, TenantTransaction } from './tenant-transaction.js'
import type { TenantTransactionOptions } from './tenant-transaction.js'
import { overrideMode, resolvePluginMode } from './transaction-mode.js'
import type { RouteMode, TenantRouteOptions } from './transaction-mode.js'
import { settingsProblem } from './transaction-settings.js'
import { validateOpenWith } from './citus/set-local.js'
import type { OpenWith } from './citus/set-local.js'
import type { TransactionSettings } from './transaction-settings.js'

/** Per-call options of `withTenant` and `app.withTenant`: the route options, plus extra settings. */
export interface WithTenantCallOptions extends Omit<TenantRouteOptions, 'singleRoundTrip'> {
  /** Extra transaction-local settings, e.g. `{ 'app.user_id': userId }` (see the plugin's `settings`). */
  settings?: TransactionSettings
}

/** Options of the standalone `withTenant`. */
export interface WithTenantOptions<TSchema extends Record<string, unknown>> extends WithTenantCallOptions {
  /** drizzle schema: types the database and enables `db.query.*`. */
  schema?: TSchema
  /** Setting the RLS policies read. Default `'app.current_tenant_id'`. */
  setting?: string
  /** Type of the tenant ids, as the plugin's option: `'uuid'` (default), `'bigint'` or `'slug'`. */
  tenantIdType?: TenantIdType
  /** Called when the connection is destroyed because `work` left session state on it (e.g. to log it). */
  onDiscard?: (reason: string) => void
  /** The plugin's own statements as named prepared statements (default true; false behind PgBouncer before 1.21). */
  preparedStatements?: boolean
  /** Route query texts each connection keeps prepared, as the plugin's option (default 100; 0 off). */
  preparedRouteQueries?: number
  /** Signed tenant context, as the plugin's option; the first call on a pool checks the database for it. */
  signedContext?: SignedContextOptions
  /** How the opening sets the tenant, as the plugin's option: `'set-config'` (default) or `'set-local'` (Citus). */
  openWith?: OpenWith
}

/** How `runWithTenant` runs its transaction, beyond the tenant and the work. */
export interface RunOptions extends Omit<TenantTransactionOptions, 'expectedRole' | 'onOpen' | 'onFinish'> {
  /** How `tenantId` is checked. Default `'uuid'`. */
  tenantIdType?: TenantIdType
  /** Registers the transaction with its owner (app.close() rolls it back); returns the undo. */
  track?: (transaction: TenantTransaction) => () => void
}

/** The work done inside a tenant transaction. */
export type TenantWork<TSchema extends Record<string, unknown>, TResult> = (db: TenantDatabase<TSchema>) => Promise<TResult>

/** Shared by the standalone function and `app.withTenant`: validate, run, commit or roll back. */
export async function runWithTenant<TSchema extends Record<string, unknown>, TResult> (
  pool: Pool,
  setting: string,
  createDatabase: DatabaseFactory,
  tenantId: unknown,
  work: TenantWork<TSchema, TResult>,
  roleOf: () => string | undefined | Promise<string>,
  { track, tenantIdType, ...transactionOptions }: RunOptions
): Promise<TResult> {
  const canonical = normalizeTenantId(tenantId, tenantIdType)
  if (canonical === null) throw new TenantInvalidError()
  // Per-call settings meet the plugin's openWith only here (app.withTenant).
  if (transactionOptions.openWith === 'set-local') validateOpenWith({ openWith: 'set-local', settings: transactionOptions.settings }, 'withTenant options: ')
  // Asked only once the tenant is known to be valid: a bad tenant id never touches the pool.
  const expectedRole = await roleOf()
  const transaction = new TenantTransaction(pool, canonical, setting, { ...transactionOptions, tenantIdType, expectedRole })
  const untrack = track?.(transaction)
  try {
    const result = await work(createDatabase(transaction) as unknown as TenantDatabase<TSchema>)
    await transaction.commit()
    return result
  } finally {
    // After a commit this is a no-op; after a throw (from the work or from COMMIT) it rolls back.
    await transaction.rollback('work threw')
    untrack?.()
  }
}

/**
 * Runs `work` in a transaction scoped to `tenantId` on `pool` (the application role's pool).
 * Commits when `work` resolves, rolls back when it throws; the database handle is closed after.
 * The first call on a pool checks its role as the plugin does at startup (no superuser, no
 * BYPASSRLS, no membership in such a role, no RLS table owned) and refuses an unsafe one; every
 * transaction on that pool must then run as the checked role.
 */
export async function withTenant<TSchema extends Record<string, unknown> = RegisteredSchema, TResult = unknown> (
  pool: Pool,
  tenantId: string,
  work: TenantWork<TSchema, TResult>,
  options: WithTenantOptions<TSchema> = {}
): Promise<TResult> {
  const { schema, setting: givenSetting, onDiscard, tenantIdType, preparedStatements, preparedRouteQueries, signedContext, openWith, ...callOptions } = options
  const setting = validateSetting(givenSetting ?? DEFAULT_SETTING)
  const idType = validateTenantIdType(tenantIdType)
  const checked = validatePool(pool)
  if (onDiscard !== undefined && typeof onDiscard !== 'function') throw new InvalidOptionError('onDiscard must be a function (reason) => void')
  const signed = signedContext === undefined ? undefined : validateSignedContext(signedContext)
  const opening = validateOpenWith({ openWith, signedContext }, 'withTenant options: ')
  return runWithTenant(checked, setting, databaseFactoryFor(validateSchema(schema)), tenantId, work, () => checkedPool(checked, setting, signed), {
    ...withTenantCallOptions(callOptions, STANDALONE_DEFAULTS, setting),
    tenantIdType: idType,
    ...validatePreparation({ preparedStatements, preparedRouteQueries }),
    signedContext: signed,
    openWith: opening,
    onDiscard
  })
}

// The standalone function has no plugin options: the server's defaults, and the plugin's lock_timeout.
const STANDALONE_DEFAULTS: RouteMode = resolvePluginMode({}, DEFAULT_LOCK_TIMEOUT)

/**
 * Validates per-call options over `defaults` (a bad one throws FST_TENANT_RLS_INVALID_OPTION before
 * anything is sent). There is no request method here: a plugin-wide `'safe-methods'` reads as false.
 */
export function withTenantCallOptions (given: WithTenantCallOptions | undefined, defaults: RouteMode, tenantSetting: string): RunOptions {
  // The work gets one transaction for all it does: the plugin's singleRoundTrip is for routes only.
  if (given === undefined) return { ...defaults, readOnly: defaults.readOnly === true, singleRoundTrip: false }
  const { settings, ...modeOptions } = given
  if ('singleRoundTrip' in modeOptions) throw new InvalidOptionError('withTenant options: singleRoundTrip is for routes; withTenant work always runs in one transaction')
  const mode = overrideMode(modeOptions, defaults, 'withTenant options')
  let pairs
  if (settings !== undefined) {
    const problem = settingsProblem(settings, tenantSetting)
    if (problem !== undefined) throw new InvalidOptionError(`withTenant options: ${problem}`)
    pairs = Object.entries(settings)
  }
  return { ...mode, readOnly: mode.readOnly === true, singleRoundTrip: false, settings: pairs }
}

// One role check per pool, shared by every withTenant call on it. A failed check is not kept, so
// a role fixed in the database is accepted on the next call.
const checkedRoles = new WeakMap<Pool, Promise<string>>()

/**
 * The checked role of `pool`, after the role check and, in signed mode, the signed-context check,
 * each done on first use and kept per pool (shared with app.withTenant before ready).
 */
export async function checkedPool (pool: Pool, setting: string, signed: ResolvedSignedContext | undefined): Promise<string> {
  const role = await checkedPoolRole(pool)
  if (signed !== undefined) await checkedSignedContext(pool, signed, setting)
  return role
}

/** The checked role of `pool`, checking it on first use. */
function checkedPoolRole (pool: Pool): Promise<string> {
  let role = checkedRoles.get(pool)
  if (role === undefined) {
    role = checkPoolRole(pool)
    checkedRoles.set(pool, role)
    role.catch(() => { checkedRoles.delete(pool) })
  }
  return role
}

// The signed-context check of each pool (shared with routed pools, routing/), once per pool and set of keys (a worker passes the same
// options on every call, validated anew each time). A failed check is not kept, as for the role.
const checkedSignedContexts = new WeakMap<Pool, Map<string, Promise<void>>>()

function checkedSignedContext (pool: Pool, context: ResolvedSignedContext, setting: string): Promise<void> {
  let byKeys = checkedSignedContexts.get(pool)
  if (byKeys === undefined) {
    byKeys = new Map()
    checkedSignedContexts.set(pool, byKeys)
  }
  const key = `${setting} ${context.keys.map((signingKey) => signingKey.id).join(',')}`
  let checked = byKeys.get(key)
  if (checked === undefined) {
    checked = checkSignedContext(pool, context, setting, emitSignedContextWarning)
    byKeys.set(key, checked)
    checked.catch(() => { byKeys.delete(key) })
  }
  return checked
}

function emitSignedContextWarning (warning: SignedContextProblem): void {
  process.emitWarning(describeSignedContextProblem(warning), { type: 'FastifyTenantRlsWarning', code: 'FST_TENANT_RLS_SIGNED_CONTEXT' })
}

// Workers call withTenant in a loop with the same schema object: build its drizzle metadata once.
const factories = new WeakMap<object, DatabaseFactory>()
const schemaless = createDatabaseFactory(undefined)

/** The drizzle factory for `schema`, built once per schema object. */
export function databaseFactoryFor (schema: Record<string, unknown> | undefined): DatabaseFactory {
  if (schema === undefined) return schemaless
  let factory = factories.get(schema)
  if (factory === undefined) {
    factory = createDatabaseFactory(schema)
    factories.set(schema, factory)
  }
  return factory
}
