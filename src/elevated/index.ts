// The public door of `fastify-tenant-rls/elevated`: every way around RLS, each narrow and audited.
// System jobs (a separate role on a separate pool), support grants and break-glass (their data side
// and the admission query the request path uses), and the append-only audit trail. Its own entry
// point, as `./schema` and `./testing` are: the back-office tools and job runners that create
// grants and read reports import it without the plugin, and apps that never elevate never load it.
export { withSystem } from './with-system.js'
export type { SystemWork, WithSystemOptions } from './with-system.js'
export type { Accountability } from './accountability.js'
export { MAX_ACTOR_LENGTH, MAX_REASON_LENGTH } from './accountability.js'
export { checkSystemRole, inspectSystemRole } from './system-role.js'
export type { SystemRoleInspection } from './system-role.js'
export { systemRoleSql } from './system-role-sql.js'
export type { SystemRoleSqlOptions } from './system-role-sql.js'
export { createGrant, DEFAULT_BREAK_GLASS_MINUTES, DEFAULT_GRANT_MINUTES, grantsTableSql, listGrants, openBreakGlass, reviewBreakGlass, revokeGrant } from './grants.js'
export type { BreakGlassOptions, BreakGlassRequest, CreateGrantOptions, Grant, GrantApiOptions, GrantDecision, GrantFilter, GrantRequest, GrantsTableSqlOptions } from './grants.js'
export { admissionColumnSql, parseAdmission } from './admission.js'
export type { Admission } from './admission.js'
export { accessReport, auditTrailSql, verifyAuditChain } from './audit-trail.js'
export type { AccessReportEntry, AccessReportOptions, AuditAnchor, AuditChainProblem, AuditChainReport, AuditEvent, AuditTrailSqlOptions, VerifyAuditChainOptions } from './audit-trail.js'
export { DEFAULT_AUDIT_TABLE, DEFAULT_GRANTS_TABLE } from './tables.js'
export type { ElevatedTables } from './tables.js'
export { DEFAULT_ACTOR_CLAIM } from './impersonation.js'
export type { StatementAccess } from './impersonation.js'
