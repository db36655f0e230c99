// Which tenant, on which database, through which tables: the options every lifecycle tool shares
// (export, import, checksums, erasure), checked once before anything is sent. Each call takes its
// pool, so a routing layer can hand every tool the pool that holds the tenant.
import type { Pool } from 'pg'
import { InvalidOptionError, TenantInvalidError } from '../errors.js'
import { DEFAULT_SETTING, validateSetting } from '../options.js'
import { TENANT_ID_COLUMN } from '../schema.js'
import { validateSignedContext } from '../signed-context/options.js'
import type { ResolvedSignedContext, SignedContextOptions } from '../signed-context/options.js'
import { normalizeTenantId, validateTenantIdType } from '../tenant-id.js'
import type { TenantIdType } from '../tenant-id.js'
import { validateOpenWith } from '../citus/set-local.js'
import type { OpenWith } from '../citus/set-local.js'

/** Options shared by every lifecycle tool. */
export interface TenantScopeOptions {
  /** The pool to run on: the application role's for export and import, a role that may delete the tenants row for erasure. */
  pool: Pool
  /** The tenant, in the canonical form of `tenantIdType`. */
  tenantId: string
  /** Tables to work on. Default: every table of `schema` with the tenant column. */
  tables?: readonly string[]
  /** PostgreSQL schema searched when `tables` is not given. Default `'public'`. */
  schema?: string
  /** Column that holds the tenant id. Default `'tenant_id'`. */
  tenantColumn?: string
  /** Setting the policies read, as the plugin's `setting`. Default `'app.current_tenant_id'`. */
  setting?: string
  /** Type of the tenant ids, as the plugin's `tenantIdType`. Default `'uuid'`. */
  tenantIdType?: TenantIdType
  /** The plugin's `signedContext`, for tables whose policies verify a signed tenant context: the job's transaction is signed as the plugin's are. */
  signedContext?: SignedContextOptions
  /** The plugin's `openWith`: `'set-local'` sets the tenant with SET LOCAL too, for Citus's workers. Not with `signedContext`. */
  openWith?: OpenWith
}

/** How far a long export or import has got, for a progress line. */
export interface LifecycleProgress {
  /** The table being copied. */
  table: string
  /** Tables finished before this one. */
  tablesDone: number
  tables: number
  /** Rows of this table copied so far. */
  rows: number
}

/** Receives progress; a returned promise is awaited before the job goes on. */
export type LifecycleProgressHandler = (progress: LifecycleProgress) => void | Promise<void>

/** The checked options. */
export interface TenantScope {
  pool: Pool
  tenantId: string
  tables: readonly string[] | undefined
  schema: string
  tenantColumn: string
  setting: string
  tenantIdType: TenantIdType
  signed: ResolvedSignedContext | undefined
  openWith: OpenWith
}

const IDENTIFIER = /^[a-z_][a-z0-9_]*$/

function plainIdentifier (name: string, value: unknown): string {
  if (typeof value !== 'string' || !IDENTIFIER.test(value)) {
    throw new InvalidOptionError(`${name} must be a plain lower-case identifier, got ${JSON.stringify(value)}`)
  }
  return value
}

/** Validates the shared options; a bad tenant id throws FST_TENANT_RLS_TENANT_INVALID, anything else FST_TENANT_RLS_INVALID_OPTION. */
export function tenantScope (options: TenantScopeOptions): TenantScope {
  const { pool, tables } = options
  if (pool === null || typeof pool !== 'object' || typeof pool.connect !== 'function') {
    throw new InvalidOptionError('pool is required and must be a pg.Pool')
  }
  const tenantIdType = validateTenantIdType(options.tenantIdType)
  const tenantId = normalizeTenantId(options.tenantId, tenantIdType)
  if (tenantId === null) throw new TenantInvalidError()
  if (tables !== undefined && (!Array.isArray(tables) || tables.length === 0 || !tables.every((table) => typeof table === 'string' && table !== ''))) {
    throw new InvalidOptionError(`tables must be a non-empty array of table names, got ${JSON.stringify(tables)}`)
  }
  return {
    pool,
    tenantId,
    tables,
    schema: plainIdentifier('schema', options.schema ?? 'public'),
    tenantColumn: plainIdentifier('tenantColumn', options.tenantColumn ?? TENANT_ID_COLUMN),
    setting: validateSetting(options.setting ?? DEFAULT_SETTING),
    tenantIdType,
    signed: options.signedContext === undefined ? undefined : validateSignedContext(options.signedContext),
    openWith: validateOpenWith({ openWith: options.openWith, signedContext: options.signedContext })
  }
}
