// fastify-tenant-rls/audit: the live-database lint (auditDatabase), EXPLAIN under a tenant
// (explainUnderTenant) and the migration that adds tenancy to an existing table. A separate entry
// point: none of it is needed by the plugin at request time, and the CLI imports it from here.
export { auditDatabase } from './audit-database.js'
export type { AuditOptions, AuditReport } from './audit-database.js'
export { AUDIT_RULES } from './rules.js'
export type { AuditFinding, AuditRule, AuditRuleId, Severity } from './rules.js'
export { TENANT_SOURCES } from './policy-forms.js'
export type { TenantSource } from './policy-forms.js'
export { RLS_CVES, missingRlsFixes } from './server-version.js'
export type { RlsCve } from './server-version.js'
export { explainUnderTenant, judgePlan } from './explain.js'
export type { ExplainOptions, ExplainReport, PlanNode } from './explain.js'
export { tenancyMigration } from './tenancy-migration.js'
export type { TenancyDownOptions, TenancyMigration, TenancyMigrationOptions, TenancyProgress, TenancyRunOptions, TenancyStep, TenancyStepName } from './tenancy-migration.js'
