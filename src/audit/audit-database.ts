// auditDatabase: reads the facts once (facts.ts) and runs every rule family over them. The report
// is data (findings with rule ids, severities, objects and fixes); printing is the CLI's business.
import { DEFAULT_SETTING, validateSetting } from '../options.js'
import { failOption } from '../errors.js'
import { TENANT_ID_SQL_TYPE, validateTenantIdType, type TenantIdType } from '../tenant-id.js'
import { bypassFindings } from './bypass-rules.js'
import { defaultDenyFindings } from './default-deny.js'
import { readAuditFacts, type Queryable } from './facts.js'
import { keyFindings } from './key-rules.js'
import { roleFindings } from './role-rules.js'
import type { AuditFinding } from './rules.js'
import { serverFindings } from './server-rules.js'
import { tableFindings } from './table-rules.js'

/** Options of `auditDatabase`. */
export interface AuditOptions {
  /** The role the application connects as (the plugin's pool role). */
  appRole: string
  /** The schema whose tables are audited. Default `'public'`. */
  schema?: string
  /** The column that holds the tenant. Default `'tenant_id'`. */
  tenantColumn?: string
  /** The setting the policies read. Default `'app.current_tenant_id'`. */
  setting?: string
  /** The tenant id type, as the plugin's `tenantIdType`. Default `'uuid'`. */
  tenantIdType?: TenantIdType
  /** The registry of global relations: tables the app role may read with no tenant column (bare or schema-qualified names). */
  allowGlobal?: readonly string[]
  /**
   * The plugin runs with `signedContext`: policies must read the tenant through
   * tenant_rls.current_tenant(); one that reads the setting itself is an error
   * (`tables.policy-unsigned`). Default false.
   */
  signedContext?: boolean
}

/** What `auditDatabase` found. */
export interface AuditReport {
  /** `server_version` of the audited server. */
  serverVersion: string
  appRole: string
  schema: string
  /** The tenant tables the rules ran on. */
  tables: string[]
  findings: AuditFinding[]
  errors: number
  warnings: number
  /** No error-level finding (warnings allowed): the CI gate. */
  ok: boolean
}

function nonEmptyString (value: unknown, name: string): string {
  if (typeof value !== 'string' || value === '') failOption(`auditDatabase: ${name} must be a non-empty string, got ${JSON.stringify(value)}`)
  return value
}

/**
 * Audits a live database for tenant isolation: tables and policies, default deny, keys, bypass
 * paths, the app role and the server version. Reads the catalogs only (one statement); the
 * connection may be any role that can read them. Throws for an unknown role or schema.
 */
export async function auditDatabase (db: Queryable, options: AuditOptions): Promise<AuditReport> {
  const appRole = nonEmptyString(options.appRole, 'appRole')
  const schema = nonEmptyString(options.schema ?? 'public', 'schema')
  const tenantColumn = nonEmptyString(options.tenantColumn ?? 'tenant_id', 'tenantColumn')
  const setting = validateSetting(options.setting ?? DEFAULT_SETTING)
  const tenantIdType = validateTenantIdType(options.tenantIdType)
  const allowGlobal = options.allowGlobal ?? []
  const signedContext = options.signedContext ?? false
  if (typeof signedContext !== 'boolean') failOption(`auditDatabase: signedContext must be true or false, got ${JSON.stringify(signedContext)}`)
  const facts = await readAuditFacts(db, { appRole, schema, tenantColumn })
  const convention = { setting, tenantColumn, signedContext }
  const findings = [
    ...tableFindings(facts, convention),
    ...defaultDenyFindings(facts, allowGlobal, tenantColumn),
    ...keyFindings(facts, tenantColumn, TENANT_ID_SQL_TYPE[tenantIdType]),
    ...bypassFindings(facts),
    ...roleFindings(facts, convention),
    ...serverFindings(facts)
  ]
  const errors = findings.filter((entry) => entry.severity === 'error').length
  return {
    serverVersion: facts.serverVersion,
    appRole,
    schema,
    tables: facts.tables.map((table) => table.name),
    findings,
    errors,
    warnings: findings.length - errors,
    ok: errors === 0
  }
}
