// Findings of the `server.*` rule: one per RLS vulnerability the server's minor release still has.
import type { AuditFacts } from './facts.js'
import { finding, type AuditFinding } from './rules.js'
import { missingRlsFixes } from './server-version.js'

export function serverFindings (facts: AuditFacts): AuditFinding[] {
  return missingRlsFixes(facts.serverVersionNum).map(({ cve, fixedIn }) =>
    finding('server.rls-cve', `PostgreSQL ${facts.serverVersion}`, `${cve.id}: ${cve.summary}`,
      fixedIn === null ? 'upgrade to a supported major version: this major never received the fix' : `upgrade to ${fixedIn} or later (a minor upgrade: same major, no dump and restore)`))
}
