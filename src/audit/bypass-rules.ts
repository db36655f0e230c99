// Verdicts on the objects that reach tenant rows around the policies: views that run with an owner
// who bypasses RLS, materialized views (no RLS at all), SECURITY DEFINER functions owned by a
// bypassing role, and sequences every tenant shares. A superuser-run migration creates the first
// three by default; each was shown to hand every tenant's rows to the app role.
import type { AuditFacts } from './facts.js'
import { finding, type AuditFinding } from './rules.js'

/** Findings of the `bypass.*` rules. */
export function bypassFindings (facts: AuditFacts): AuditFinding[] {
  const findings: AuditFinding[] = []
  for (const view of facts.views) {
    if (!view.appCanRead || !view.ownerBypasses || view.securityInvoker) continue
    findings.push(finding('bypass.view', view.name,
      `the app role can read the view, which reads ${view.reads.join(', ')} with the rights of ${view.owner}, a role that bypasses RLS on it`,
      `ALTER VIEW ${view.name} SET (security_invoker = true);`))
  }
  for (const view of facts.materializedViews) {
    if (!view.appCanRead) continue
    findings.push(finding('bypass.materialized-view', view.name,
      `the app role can read the materialized view, which stores rows of ${view.reads.join(', ')} for every tenant`,
      `REVOKE ALL ON ${view.name} FROM the app role; serve it through a function or a view that filters by tenant, or drop it`))
  }
  for (const fn of facts.functions) {
    findings.push(finding('bypass.security-definer-function', `function ${fn.name}`,
      `the app role may execute the SECURITY DEFINER function, which runs as ${fn.owner}, a role that bypasses RLS`,
      `ALTER FUNCTION ${fn.name} SECURITY INVOKER; or REVOKE EXECUTE ON FUNCTION ${fn.name} FROM PUBLIC, the app role`))
  }
  for (const sequence of facts.sequences) {
    findings.push(finding('bypass.sequence-counts', `sequence ${sequence.name}`,
      `${sequence.table}.${sequence.column} draws from one sequence for every tenant: the gaps between a tenant's ids count the other tenants' inserts`,
      `use random ids (${sequence.column} uuid DEFAULT gen_random_uuid()) for rows tenants see`))
  }
  return findings
}
