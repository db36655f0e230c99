// Verdicts on the tenant tables and their policies: RLS on and FORCE'd, a policy for every command
// the app role may run, WITH CHECK where it writes, and every permissive policy restricting rows to
// the tenant in an accepted form (policy-forms.ts); in signed mode, through the verifying function only.
import type { AuditFacts, PolicyFacts, TenantTableFacts } from './facts.js'
import { judgeExpression } from './policy-forms.js'
import { finding, type AuditFinding } from './rules.js'
import { CURRENT_TENANT_FUNCTION } from '../signed-context/schema-sql.js'

/** The audit's view of how tenants are told apart. */
export interface TenantConvention {
  setting: string
  tenantColumn: string
  /** The plugin runs with `signedContext`: a policy that reads the setting itself is forgeable by route SQL. */
  signedContext?: boolean
}

const COMMANDS = [
  { command: 'r', word: 'SELECT', privilege: 'select' },
  { command: 'a', word: 'INSERT', privilege: 'insert' },
  { command: 'w', word: 'UPDATE', privilege: 'update' },
  { command: 'd', word: 'DELETE', privilege: 'delete' }
] as const

const COMMAND_WORD: Readonly<Record<PolicyFacts['command'], string>> = { '*': 'ALL', r: 'SELECT', a: 'INSERT', w: 'UPDATE', d: 'DELETE' }

/** The standard policy, as the fix for a table that lacks one. */
function standardPolicySql (table: string, convention: TenantConvention, type = 'uuid'): string {
  const tenant = tenantSourceSql(convention, type)
  const { tenantColumn } = convention
  return `CREATE POLICY tenant_isolation ON ${table} USING (${tenantColumn} = ${tenant}) WITH CHECK (${tenantColumn} = ${tenant});`
}

/** The recommended tenant source of the mode: the verifying function in signed mode, else the setting. */
function tenantSourceSql ({ setting, signedContext = false }: TenantConvention, type: string): string {
  const cast = type === 'text' ? '' : `::${type}`
  return signedContext ? `(select ${CURRENT_TENANT_FUNCTION}${cast})` : `(select nullif(current_setting('${setting}', true), '')${cast})`
}

const policyObject = (policy: PolicyFacts, table: TenantTableFacts): string => `policy ${policy.name} on ${table.name}`

// The expressions that decide which rows a policy opens: USING, and WITH CHECK for writes
// (absent, PostgreSQL uses USING for ALL and UPDATE policies).
function expressionsOf (policy: PolicyFacts): string[] {
  return [policy.using, policy.withCheck].filter((expression): expression is string => expression !== null)
}

function structureFindings (table: TenantTableFacts, convention: TenantConvention): AuditFinding[] {
  const findings: AuditFinding[] = []
  if (!table.rls) findings.push(finding('tables.rls-disabled', table.name, 'row-level security is not enabled', `ALTER TABLE ${table.name} ENABLE ROW LEVEL SECURITY;`))
  if (!table.forced) findings.push(finding('tables.rls-not-forced', table.name, 'row-level security is not FORCE\'d', `ALTER TABLE ${table.name} FORCE ROW LEVEL SECURITY;`))
  if (table.policies.length === 0) findings.push(finding('tables.no-policy', table.name, 'the table has no policy', standardPolicySql(table.name, convention, table.columnType)))
  return findings
}

function coverageFindings (table: TenantTableFacts, convention: TenantConvention): AuditFinding[] {
  if (table.policies.length === 0) return []
  const permissive = table.policies.filter((policy) => policy.permissive && (policy.appliesToApp || policy.inheritedRoles.length > 0))
  return COMMANDS
    .filter(({ command, privilege }) => table.privileges[privilege] && !permissive.some((policy) => policy.command === '*' || policy.command === command))
    .map(({ word }) => finding('tables.command-uncovered', table.name, `the app role may ${word} but no permissive policy covers ${word}`,
      `a policy FOR ${word} (or FOR ALL) on ${table.name}, or REVOKE ${word} ON ${table.name} FROM the app role; the standard one: ${standardPolicySql(table.name, convention, table.columnType)}`))
}

function policyFindings (table: TenantTableFacts, policy: PolicyFacts, convention: TenantConvention): AuditFinding[] {
  const findings: AuditFinding[] = []
  const object = policyObject(policy, table)
  const writes = policy.command === '*' || policy.command === 'a' || policy.command === 'w'
  if (writes && policy.withCheck === null && (table.privileges.insert || table.privileges.update)) {
    findings.push(finding('tables.policy-without-check', object, `the ${COMMAND_WORD[policy.command]} policy has no WITH CHECK${policy.command === 'a' ? ': any row is accepted' : ''}`,
      `ALTER POLICY ${policy.name} ON ${table.name} WITH CHECK (${convention.tenantColumn} = ${tenantSourceSql(convention, table.columnType)});`))
  }
  // The app role's own policies; inherited roles' are role.broader-policy's to report.
  if (!policy.appliesToApp) return findings
  const verdicts = expressionsOf(policy).map((expression) => judgeExpression(expression, convention.setting, convention.tenantColumn))
  if (policy.permissive && (verdicts.length === 0 || verdicts.some((verdict) => !verdict.restrictsToTenant))) {
    findings.push(finding('tables.permissive-without-setting', object,
      `the permissive ${COMMAND_WORD[policy.command]} policy does not restrict rows to ${convention.tenantColumn} = the tenant setting (${[policy.using, policy.withCheck].filter(Boolean).join(' / ') || 'no expression'})`,
      `DROP POLICY ${policy.name} ON ${table.name}; or make it AS RESTRICTIVE, or compare ${convention.tenantColumn} with the setting: ${standardPolicySql(table.name, convention, table.columnType)}`))
  }
  if (verdicts.some((verdict) => verdict.textCast)) {
    findings.push(finding('tables.policy-text-cast', object, `the policy casts ${convention.tenantColumn} to text to compare it`,
      `compare the column itself: ${convention.tenantColumn} = (select nullif(current_setting('${convention.setting}', true), '')::${table.columnType})`))
  }
  // In signed mode a setting-reading policy is the hole the mode closes, not a style question.
  if (convention.signedContext === true && verdicts.some((verdict) => verdict.source !== undefined && !verdict.source.signed)) {
    findings.push(finding('tables.policy-unsigned', object, `the policy reads the setting '${convention.setting}' itself, which route SQL can write, instead of ${CURRENT_TENANT_FUNCTION}`,
      `ALTER POLICY ${policy.name} ON ${table.name} USING (${convention.tenantColumn} = ${tenantSourceSql(convention, table.columnType)}) WITH CHECK (${convention.tenantColumn} = ${tenantSourceSql(convention, table.columnType)}); or declare the table with createTenantTable({ ..., signedContext: true })`))
  } else if (verdicts.some((verdict) => verdict.source?.signed === true && !verdict.source.preferred)) {
    const signedSource = tenantSourceSql({ ...convention, signedContext: true }, table.columnType)
    findings.push(finding('tables.policy-form', object, `the policy calls ${CURRENT_TENANT_FUNCTION} without (select …): it verifies the signature for every row instead of once per statement`,
      `ALTER POLICY ${policy.name} ON ${table.name} USING (${convention.tenantColumn} = ${signedSource}) WITH CHECK (${convention.tenantColumn} = ${signedSource});`))
  } else if (verdicts.some((verdict) => verdict.source !== undefined && !verdict.source.preferred)) {
    findings.push(finding('tables.policy-form', object, "the policy reads the setting without (select …) or without nullif(…, '')",
      `ALTER POLICY ${policy.name} ON ${table.name} USING (${convention.tenantColumn} = (select nullif(current_setting('${convention.setting}', true), '')::${table.columnType}));`))
  }
  return findings
}

/** Findings of the `tables.*` rules. */
export function tableFindings (facts: AuditFacts, convention: TenantConvention): AuditFinding[] {
  if (facts.tables.length === 0) {
    return [finding('tables.none-found', `column ${convention.tenantColumn}`, `no table of the audited schema has a ${convention.tenantColumn} column`, 'check --schema and --tenant-column')]
  }
  return facts.tables.flatMap((table) => [
    ...structureFindings(table, convention),
    ...coverageFindings(table, convention),
    ...table.policies.flatMap((policy) => policyFindings(table, policy, convention))
  ])
}
