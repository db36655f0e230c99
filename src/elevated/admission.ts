// The admission query of impersonated requests: given an operator and a tenant, the live grant that
// lets the operator act as the tenant, if any. It is built to ride in the opening round trip as one
// more column of the opening's SELECT, with two bound parameters, so admission costs no extra round
// trip and reads the grants table at the moment the transaction opens: a revoked or expired grant
// stops the very next request (no cache, so no staleness bound beyond the statement's own time).
//
// It reads as the app role, which sees only the grants of its transaction's tenant (the grants
// table's policy). In the opening the tenant setting is set by an earlier column of the same SELECT;
// PostgreSQL evaluates a target list left to right, and this column is a subquery evaluated when
// it is reached. Were that order ever different, the policy would read no tenant and the grant
// would be hidden: the request would be refused, never admitted. Fail closed either way.
import { DEFAULT_GRANTS_TABLE, tableName } from './tables.js'

/** A live grant that admits an impersonated request. */
export interface Admission {
  grantId: string
  /** The grant allows writes; otherwise the request's transaction must be READ ONLY. */
  write: boolean
  /** An emergency grant: log every use at warn. */
  breakGlass: boolean
}

/**
 * The admission column: a scalar subquery, `$<first>` the operator and `$<first + 1>` the tenant
 * (its canonical text), yielding a json object `{ grantId, write, breakGlass }` or NULL (refuse).
 * Denied: no grant, another operator's or another tenant's, expired, revoked, or approved by the
 * operator (also refused by a constraint; checked again here in case a migration dropped it).
 * When several are live, a writing one wins, then the one that lasts longest.
 */
export function admissionColumnSql (first: number, options: { grantsTable?: string } = {}): string {
  if (!Number.isInteger(first) || first < 1) throw new RangeError(`admissionColumnSql: first must be a parameter number from 1, got ${String(first)}`)
  const grants = tableName('grantsTable', options.grantsTable, DEFAULT_GRANTS_TABLE)
  return `(SELECT pg_catalog.json_build_object('grantId', g.id, 'write', g.write, 'breakGlass', g.break_glass)
   FROM ${grants.sql} g
  WHERE g.operator OPERATOR(pg_catalog.=) $${first}::text AND g.tenant_id OPERATOR(pg_catalog.=) $${first + 1}::text
    AND g.revoked_at IS NULL AND g.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp()
    AND (g.break_glass OR pg_catalog.lower(g.approver) OPERATOR(pg_catalog.<>) pg_catalog.lower(g.operator))
  ORDER BY g.write DESC, g.expires_at DESC LIMIT 1)`
}

/** The admission column's value as read by pg: the grant that admits, or null to refuse. */
export function parseAdmission (value: unknown): Admission | null {
  if (value === null || typeof value !== 'object') return null
  const { grantId, write, breakGlass } = value as Record<string, unknown>
  if (typeof grantId !== 'string' || typeof write !== 'boolean' || typeof breakGlass !== 'boolean') return null
  return { grantId, write, breakGlass }
}
