// The plugin's startup audit: at `ready`, the error-level table and key rules of the audit, run on
// the tables the registered drizzle schema declares with `tenantTable` (fastify-tenant-rls/schema),
// and nothing else: a hand-written pgTable is the CLI audit's, which sees the whole database. The role's half of the audit is the startup check that already refuses an unsafe pool role
// (safety-checks.ts), whatever this option says. One catalog query per PostgreSQL schema.
import { getTableConfig } from 'drizzle-orm/pg-core'
import type { Pool } from 'pg'
import { UnsafeSchemaError } from '../errors.js'
import { isTenantTable, TENANT_ID_COLUMN } from '../schema.js'
import { TENANT_ID_SQL_TYPE } from '../tenant-id.js'
import type { TenantIdType } from '../tenant-id.js'
import { readAuditFacts } from './facts.js'
import { keyFindings } from './key-rules.js'
import type { AuditFinding } from './rules.js'
import { tableFindings } from './table-rules.js'

/** What the startup audit does with an error-level finding on a declared table: refuse to start, log it, or nothing at all. */
export type StartupAuditMode = 'error' | 'warn' | 'off'

export interface StartupAuditOptions {
  role: string
  schema: Record<string, unknown>
  setting: string
  tenantIdType: TenantIdType
  /** The plugin runs with `signedContext`: policies must read the tenant through the verifying function. */
  signedContext?: boolean
  mode: StartupAuditMode
  /** Receives each finding once (every mode but 'off'). */
  onFinding: (finding: AuditFinding) => void
}

const TENANT_COLUMN = TENANT_ID_COLUMN

// Tables declared with tenantTable: bare names by PostgreSQL schema.
function declaredTenantTables (schema: Record<string, unknown>): Map<string, Set<string>> {
  const bySchema = new Map<string, Set<string>>()
  for (const value of Object.values(schema)) {
    if (!isTenantTable(value)) continue
    const config = getTableConfig(value)
    const pgSchema = config.schema ?? 'public'
    const names = bySchema.get(pgSchema) ?? new Set<string>()
    names.add(config.name)
    bySchema.set(pgSchema, names)
  }
  return bySchema
}

/** Runs the startup audit; in 'error' mode throws UnsafeSchemaError listing every error-level finding. */
export async function auditRegisteredTables (pool: Pool, options: StartupAuditOptions): Promise<AuditFinding[]> {
  if (options.mode === 'off') return []
  const findings: AuditFinding[] = []
  for (const [pgSchema, names] of declaredTenantTables(options.schema)) {
    const facts = await readAuditFacts(pool, { appRole: options.role, schema: pgSchema, tenantColumn: TENANT_COLUMN })
    // A declared table missing from the database is drizzle's migration business, not this check's.
    const declared = { ...facts, tables: facts.tables.filter((table) => names.has(table.relname)) }
    if (declared.tables.length === 0) continue
    const convention = { setting: options.setting, tenantColumn: TENANT_COLUMN, signedContext: options.signedContext === true }
    findings.push(...[...tableFindings(declared, convention), ...keyFindings(declared, TENANT_COLUMN, TENANT_ID_SQL_TYPE[options.tenantIdType])]
      .filter((entry) => entry.severity === 'error'))
  }
  for (const entry of findings) options.onFinding(entry)
  if (options.mode === 'error' && findings.length > 0) {
    throw new UnsafeSchemaError(findings.map((entry) => `${entry.rule} ${entry.object}: ${entry.message} (fix: ${entry.fix})`).join('; '))
  }
  return findings
}
