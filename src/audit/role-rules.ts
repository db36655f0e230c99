// Verdicts on the application role: nothing that switches RLS off (superuser, BYPASSRLS, a
// membership one SET ROLE away, table ownership), nothing that lets one tenant leave objects for
// another (CREATE on a schema or the database, TEMP), and no inherited role whose policies are wider
// than the tenant. The plugin's startup check refuses the same facts about its own pool's role
// (safety-checks.ts); the audit asks about any role, by name, from any connection.
import type { AuditFacts } from './facts.js'
import { judgeExpression } from './policy-forms.js'
import { finding, type AuditFinding } from './rules.js'
import type { TenantConvention } from './table-rules.js'

/** Findings of the `role.*` rules. */
export function roleFindings (facts: AuditFacts, convention: TenantConvention): AuditFinding[] {
  const { role } = facts
  const object = `role "${role.name}"`
  const findings: AuditFinding[] = []
  if (role.superuser) findings.push(finding('role.superuser', object, 'is a superuser', `ALTER ROLE "${role.name}" NOSUPERUSER;`))
  if (role.bypassrls) findings.push(finding('role.bypassrls', object, 'has BYPASSRLS', `ALTER ROLE "${role.name}" NOBYPASSRLS;`))
  if (role.bypassingMemberships.length > 0) {
    findings.push(finding('role.member-of-bypassing', object, `is a member of ${role.bypassingMemberships.join(', ')}, which bypass RLS`, `REVOKE ${role.bypassingMemberships.map((name) => `"${name}"`).join(', ')} FROM "${role.name}";`))
  }
  if (role.ownedTenantTables.length > 0) {
    findings.push(finding('role.owns-tenant-table', object, `owns (or is a member of the owner of) ${role.ownedTenantTables.join(', ')}`,
      `ALTER TABLE … OWNER TO a migration role "${role.name}" is not a member of; then GRANT SELECT, INSERT, UPDATE, DELETE to "${role.name}"`))
  }
  if (role.createSchemas.length > 0) {
    findings.push(finding('role.create-schema', object, `may create objects in schema ${role.createSchemas.join(', ')}`, role.createSchemas.map((schema) => `REVOKE CREATE ON SCHEMA "${schema}" FROM PUBLIC, "${role.name}";`).join(' ')))
  }
  if (role.createDatabase) findings.push(finding('role.create-database', object, `may create schemas in database "${role.database}"`, `REVOKE CREATE ON DATABASE "${role.database}" FROM PUBLIC, "${role.name}";`))
  if (role.temporary) findings.push(finding('role.temp', object, `may create temporary tables in database "${role.database}"`, `REVOKE TEMPORARY ON DATABASE "${role.database}" FROM PUBLIC, "${role.name}";`))
  for (const table of facts.tables) {
    for (const policy of table.policies) {
      if (!policy.permissive || policy.inheritedRoles.length === 0) continue
      const expressions = [policy.using, policy.withCheck].filter((expression): expression is string => expression !== null)
      if (expressions.length > 0 && expressions.every((expression) => judgeExpression(expression, convention.setting, convention.tenantColumn).restrictsToTenant)) continue
      findings.push(finding('role.broader-policy', object,
        `inherits ${policy.inheritedRoles.join(', ')}, whose policy ${policy.name} on ${table.name} does not restrict rows to the tenant`,
        `REVOKE ${policy.inheritedRoles.map((name) => `"${name}"`).join(', ')} FROM "${role.name}"; or restrict policy ${policy.name} on ${table.name} to the tenant`))
    }
  }
  return findings
}
