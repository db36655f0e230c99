// explainUnderTenant: runs EXPLAIN (ANALYZE, BUFFERS) of one statement as the app role with one
// tenant's setting, inside a transaction that is always rolled back, and flags the plan shapes that
// make RLS slow: a sequential scan of a tenant table, the policy as a filter instead of an index
// condition, and a policy evaluated per row. The statement really runs (ANALYZE): writes are
// undone by the rollback, but whatever escapes a transaction (sequence values, notices sent to
// other systems) does not. In signed mode the tenant is set with its signature (explain-context.ts).
import pg from 'pg'
import type { ClientBase, Pool } from 'pg'
import { AuditRoleNotFoundError, InvalidOptionError, TenantInvalidError } from '../errors.js'
import { connectHeld, releaseHeld } from '../held-client.js'
import { DEFAULT_SETTING, validateSetting } from '../options.js'
import { validateSignedContext, type SignedContextOptions } from '../signed-context/options.js'
import { SIGNED_CONTEXT_SCHEMA } from '../signed-context/schema-sql.js'
import { normalizeTenantId, validateTenantIdType, type TenantIdType } from '../tenant-id.js'
import { openExplainContext, refuseUnsignedPlan, type PlanRelation } from './explain-context.js'
import { finding, type AuditFinding } from './rules.js'

/** Options of `explainUnderTenant`. */
export interface ExplainOptions {
  /** The role the application connects as; the connection must be that role or a member of it. */
  appRole: string
  /** The tenant whose setting the statement runs with. */
  tenant: string
  /** One SQL statement (several are refused by the protocol used). */
  sql: string
  /** Bound parameters of the statement ($1, $2 …). */
  params?: unknown[]
  /** Default `'app.current_tenant_id'`. */
  setting?: string
  /** Default `'uuid'`. */
  tenantIdType?: TenantIdType
  /** Column that marks a tenant table. Default `'tenant_id'`. */
  tenantColumn?: string
  /**
   * The plugin's `signedContext` (the same keys), for tables whose policies verify a signed tenant
   * context: the tenant is set with a signature made with the first key, and a signature the
   * database does not verify is refused (FST_TENANT_RLS_SIGNED_CONTEXT_REJECTED). Without it, a
   * plan that reads such a table is refused (FST_TENANT_RLS_SIGNED_CONTEXT_REQUIRED): the
   * statement would see none of the tenant's rows, and is not run.
   */
  signedContext?: SignedContextOptions
}

/** One node of PostgreSQL's JSON plan (the keys this module reads). */
export interface PlanNode {
  'Node Type': string
  'Relation Name'?: string
  Schema?: string
  Alias?: string
  'Index Name'?: string
  'Index Cond'?: string
  'Recheck Cond'?: string
  Filter?: string
  'Parent Relationship'?: string
  'Subplan Name'?: string
  'Actual Rows'?: number
  'Actual Loops'?: number
  'Actual Total Time'?: number
  'Rows Removed by Filter'?: number
  'Shared Hit Blocks'?: number
  'Shared Read Blocks'?: number
  Plans?: PlanNode[]
}

/** What `explainUnderTenant` returns. */
export interface ExplainReport {
  /** The plan, one node per line, indented like PostgreSQL's text format. */
  plan: string
  /** PostgreSQL's JSON plan, whole. */
  json: unknown
  executionMs: number
  findings: AuditFinding[]
}

// A node name as the text plan writes it: "Index Scan using i on public.t t".
function nodeLabel (node: PlanNode): string {
  const relation = node['Relation Name'] === undefined ? '' : ` on ${node.Schema === undefined ? '' : `${node.Schema}.`}${node['Relation Name']}${node.Alias !== undefined && node.Alias !== node['Relation Name'] ? ` ${node.Alias}` : ''}`
  const index = node['Index Name'] === undefined ? '' : ` using ${node['Index Name']}`
  return `${node['Node Type']}${index}${relation}`
}

function renderPlan (node: PlanNode, depth = 0, lines: string[] = []): string[] {
  const pad = '  '.repeat(depth)
  const prefix = depth === 0 ? '' : '-> '
  const name = node['Subplan Name'] === undefined ? '' : `${node['Subplan Name']}: `
  const buffers = (node['Shared Hit Blocks'] ?? 0) + (node['Shared Read Blocks'] ?? 0)
  lines.push(`${pad}${prefix}${name}${nodeLabel(node)} (actual rows=${node['Actual Rows'] ?? '?'} loops=${node['Actual Loops'] ?? '?'} time=${node['Actual Total Time'] ?? '?'} ms buffers=${buffers})`)
  for (const key of ['Index Cond', 'Recheck Cond', 'Filter'] as const) {
    if (node[key] !== undefined) lines.push(`${pad}     ${key}: ${node[key]}${key === 'Filter' && node['Rows Removed by Filter'] !== undefined ? ` (removed ${node['Rows Removed by Filter']})` : ''}`)
  }
  for (const child of node.Plans ?? []) renderPlan(child, depth + 1, lines)
  return lines
}

function walk (node: PlanNode, visit: (node: PlanNode) => void): void {
  visit(node)
  for (const child of node.Plans ?? []) walk(child, visit)
}

// How a policy's tenant shows in a row filter when it is read per row, and its once-per-statement
// form. The signed one verifies an HMAC per row, so it costs more than the setting it replaces. Its
// schema is left out of the match: the deparser drops it when the search_path reaches tenant_rls.
const PER_ROW_CALLS = [
  { call: 'current_tenant(', once: `(select ${SIGNED_CONTEXT_SCHEMA}.current_tenant()::uuid)` },
  { call: 'current_setting(', once: "(select nullif(current_setting('<setting>', true), '')::uuid)" }
] as const

/** Flags the three plan shapes over the tenant tables in `tenantTables` (`schema.table`). */
export function judgePlan (root: PlanNode, tenantTables: ReadonlySet<string>, tenantColumn: string): AuditFinding[] {
  const findings: AuditFinding[] = []
  const comparesTenant = new RegExp(`(?:^|[\\s(.])${tenantColumn.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} = `)
  walk(root, (node) => {
    const relation = node['Relation Name']
    if (relation === undefined || !tenantTables.has(`${node.Schema ?? 'public'}.${relation}`)) return
    const label = nodeLabel(node)
    if (node['Node Type'] === 'Seq Scan') {
      findings.push(finding('explain.seq-scan', label, `${relation} is read in full (${node['Rows Removed by Filter'] ?? 0} row(s) removed by the filter)`,
        `an index that leads with ${tenantColumn} (CREATE INDEX ON ${node.Schema ?? 'public'}.${relation} (${tenantColumn}, …)); on a table of a few rows the planner prefers a scan: measure on realistic data`))
    } else if (node.Filter !== undefined && comparesTenant.test(node.Filter) && !comparesTenant.test(`${node['Index Cond'] ?? ''} ${node['Recheck Cond'] ?? ''}`)) {
      findings.push(finding('explain.policy-filter', label, `the tenant comparison is a filter (${node.Filter}), not an index condition`,
        `an index that leads with ${tenantColumn} and then the columns this query searches by`))
    }
    const perRow = (node.Plans ?? []).filter((child) => child['Parent Relationship'] === 'SubPlan')
    const perRowCall = PER_ROW_CALLS.find(({ call }) => node.Filter?.includes(call) ?? false)
    if (perRow.length > 0 || perRowCall !== undefined) {
      findings.push(finding('explain.policy-per-row', label, perRow.length > 0 ? `${perRow.map((child) => child['Subplan Name']).join(', ')} run(s) for every row` : `${perRowCall?.call ?? ''}) is called for every row of the filter`,
        `write the policy's tenant as ${perRowCall?.once ?? PER_ROW_CALLS[1].once}, which PostgreSQL evaluates once (an InitPlan)`))
    }
  })
  return findings
}

// The facts of the relations the plan reads, as the app role: whether each has the tenant column,
// and whether a policy that applies to the role calls the verifying function. Policies are matched
// to the function through pg_depend, as the signed-context inspection matches them: neither a
// search_path that shortens the deparsed name nor a look-alike in another schema passes for it. A
// partition read through its parent is under the parent's policies, so those count too.
const PLAN_RELATIONS_SQL = `
SELECT n.nspname || '.' || c.relname AS name,
  EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $2 AND NOT a.attisdropped) AS "tenantTable",
  EXISTS (
    SELECT FROM pg_catalog.pg_policy pol
    JOIN pg_catalog.pg_class pc ON pc.oid = pol.polrelid AND pc.relrowsecurity
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = pol.oid AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
    JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid AND p.proname = 'current_tenant' AND p.pronargs = 0
    JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace AND pn.nspname = $3
    WHERE (pol.polrelid = c.oid OR pol.polrelid IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(c.oid)))
      AND EXISTS (SELECT FROM pg_catalog.unnest(pol.polroles) AS r(oid) WHERE r.oid = 0 OR pg_catalog.pg_has_role(r.oid, 'MEMBER'))
  ) AS signed
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY ($1::text[])`

/** The relations a plan reads, as `schema.table` (VERBOSE names the schema of each). */
function planRelations (root: PlanNode): string[] {
  const names = new Set<string>()
  walk(root, (node) => { if (node['Relation Name'] !== undefined) names.add(`${node.Schema ?? 'public'}.${node['Relation Name']}`) })
  return [...names]
}

interface ExplainedPlan { Plan: PlanNode, 'Execution Time': number }

// The extended protocol refuses a second statement, so "…; COMMIT" cannot end the rollback's transaction.
async function explainJson (client: ClientBase, explainOptions: string, options: ExplainOptions): Promise<ExplainedPlan> {
  const { rows: [result] } = await client.query<{ 'QUERY PLAN': ExplainedPlan[] }>({
    text: `EXPLAIN (${explainOptions}, FORMAT JSON) ${options.sql}`,
    values: options.params ?? [],
    queryMode: 'extended'
  } as pg.QueryConfig)
  const explained = result?.['QUERY PLAN'][0]
  if (explained === undefined) throw new Error('EXPLAIN returned no plan')
  return explained
}

/** What the catalog says of each relation a plan reads (PLAN_RELATIONS_SQL). */
async function planFacts (client: ClientBase, root: PlanNode, tenantColumn: string): Promise<Array<PlanRelation & { tenantTable: boolean }>> {
  const { rows } = await client.query<PlanRelation & { tenantTable: boolean }>(PLAN_RELATIONS_SQL, [planRelations(root), tenantColumn, SIGNED_CONTEXT_SCHEMA])
  return rows
}

async function connectionOf (db: Pool | ClientBase): Promise<{ client: ClientBase, done: (broken?: Error) => void }> {
  if (db instanceof pg.Pool) {
    const client = await connectHeld(db)
    return { client, done: (broken) => releaseHeld(client, broken) }
  }
  return { client: db, done: () => {} }
}

/**
 * Runs `EXPLAIN (ANALYZE, BUFFERS, VERBOSE)` of `options.sql` as `options.appRole` with the
 * tenant's setting, in a transaction that is always rolled back; returns the plan and its findings.
 */
export async function explainUnderTenant (db: Pool | ClientBase, options: ExplainOptions): Promise<ExplainReport> {
  const setting = validateSetting(options.setting ?? DEFAULT_SETTING)
  const tenantIdType = validateTenantIdType(options.tenantIdType)
  const tenant = normalizeTenantId(options.tenant, tenantIdType)
  if (tenant === null) throw new TenantInvalidError()
  if (typeof options.appRole !== 'string' || options.appRole === '') throw new InvalidOptionError('explainUnderTenant: appRole must be a role name')
  if (typeof options.sql !== 'string' || options.sql.trim() === '') throw new InvalidOptionError('explainUnderTenant: sql must be one SQL statement')
  const tenantColumn = options.tenantColumn ?? 'tenant_id'
  const signed = options.signedContext === undefined ? undefined : validateSignedContext(options.signedContext)
  const { client, done } = await connectionOf(db)
  let rollbackFailure: Error | undefined
  try {
    await client.query('BEGIN')
    // Only the role name is written into SQL (SET ROLE takes no parameter), quoted by pg. A role
    // that does not exist gets the audit's error, not SET ROLE's generic 22023.
    const { rows: [who] } = await client.query<{ role: string, known: boolean }>(
      'SELECT current_user AS role, EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1) AS known', [options.appRole])
    if (who?.known !== true) throw new AuditRoleNotFoundError(options.appRole)
    if (who.role !== options.appRole) await client.query(`SET LOCAL ROLE ${pg.escapeIdentifier(options.appRole)}`)
    await openExplainContext(client, setting, tenant, signed)
    // Unsigned, a statement that reads a table under a signed policy would run seeing none of the
    // tenant's rows (and an INSERT into one would fail inside EXPLAIN ANALYZE): refused from its plan
    // before it runs, so nothing of it (a sequence value, a notice) escapes for a plan not worth reading.
    // The facts of that plan serve the findings too: the run that follows plans the same statement,
    // with the same parameters, in the same transaction.
    const planned = signed === undefined ? await planFacts(client, (await explainJson(client, 'VERBOSE', options)).Plan, tenantColumn) : undefined
    if (planned !== undefined) refuseUnsignedPlan(planned, signed)
    const explained = await explainJson(client, 'ANALYZE, BUFFERS, VERBOSE', options)
    const relations = planned ?? await planFacts(client, explained.Plan, tenantColumn)
    const tenantTables = new Set(relations.filter((relation) => relation.tenantTable).map((relation) => relation.name))
    return {
      plan: renderPlan(explained.Plan).join('\n'),
      json: [explained],
      executionMs: explained['Execution Time'],
      findings: judgePlan(explained.Plan, tenantTables, tenantColumn)
    }
  } finally {
    // A failed rollback leaves the connection in an unknown state (maybe still the app role): not reused.
    await client.query('ROLLBACK').catch((error: Error) => { rollbackFailure = error })
    done(rollbackFailure)
  }
}
