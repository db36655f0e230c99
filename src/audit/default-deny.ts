// Default deny: every relation the app role can read either carries the tenant column or is
// registered as global (`allowGlobal`). The registry is explicit so that a table added later with
// a careless GRANT is an audit error, not a quiet cross-tenant read.
import type { AuditFacts } from './facts.js'
import { finding, type AuditFinding } from './rules.js'

const KIND: Readonly<Record<string, string>> = { r: 'table', p: 'partitioned table', v: 'view', m: 'materialized view', f: 'foreign table' }

/** Findings of `default-deny.unregistered-global`. `allowGlobal` holds bare or schema-qualified names. */
export function defaultDenyFindings (facts: AuditFacts, allowGlobal: readonly string[], tenantColumn: string): AuditFinding[] {
  const registered = new Set(allowGlobal)
  return facts.globals
    .filter((relation) => !registered.has(relation.name) && !registered.has(relation.relname))
    .map((relation) => finding('default-deny.unregistered-global', relation.name,
      `the app role can read the ${KIND[relation.kind] ?? 'relation'} ${relation.name}, which has no ${tenantColumn} column and is not registered as global`,
      `REVOKE ALL ON ${relation.name} FROM the app role; or, if every tenant may read all of it, add it to --allow-global (allowGlobal)`))
}
