// explainUnderTenant: runs EXPLAIN (ANALYZE, BUFFERS) of one statement as the app role with one
// tenant's setting, inside a transaction that is always rolled back, and flags the plan shapes that
// make RLS slow: a sequential scan of a tenant table, the policy as a filter instead of an index
// condition, and a policy evaluated per row. The statement really runs (ANALYZE): writes are
// undone by the rollback, but whatever escapes a transaction (sequence values, notices sent to
// other systems) does not.
import pg from 'pg'
import type { ClientBase, Pool } from 'pg'
import { InvalidOptionError, TenantInvalidError } from '../errors.js'
import { connectHeld, releaseHeld } from '../held-client.js'
import { DEFAULT_SETTING, validateSetting } from '../options.js'
import { normalizeTenantId, validateTenantIdType, type TenantIdType } from '../tenant-id.js'
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
    if (perRow.length > 0 || (node.Filter?.includes('current_setting(') ?? false)) {
      findings.push(finding('explain.policy-per-row', label, perRow.length > 0 ? `${perRow.map((child) => child['Subplan Name']).join(', ')} run(s) for every row` : 'current_setting() is called for every row of the filter',
        "write the policy's tenant as (select nullif(current_setting('<setting>', true), '')::uuid), which PostgreSQL evaluates once (an InitPlan)"))
    }
  })
  return findings
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
  const { client, done } = await connectionOf(db)
  let rollbackFailure: Error | undefined
  try {
    await client.query('BEGIN')
    // Only the role name is written into SQL (SET ROLE takes no parameter), quoted by pg.
    const { rows: [who] } = await client.query<{ role: string }>('SELECT current_user AS role')
    if (who?.role !== options.appRole) await client.query(`SET LOCAL ROLE ${pg.escapeIdentifier(options.appRole)}`)
    await client.query('SELECT pg_catalog.set_config($1, $2, true)', [setting, tenant])
    // The extended protocol refuses a second statement, so "…; COMMIT" cannot end the rollback's transaction.
    const { rows: [result] } = await client.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode, 'Execution Time': number }> }>({
      text: `EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON) ${options.sql}`,
      values: options.params ?? [],
      queryMode: 'extended'
    } as pg.QueryConfig)
    const explained = result?.['QUERY PLAN'][0]
    if (explained === undefined) throw new Error('EXPLAIN returned no plan')
    const { rows: tables } = await client.query<{ name: string }>(
      `SELECT n.nspname || '.' || c.relname AS name FROM pg_catalog.pg_class c
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $1 AND NOT a.attisdropped
       WHERE c.relkind IN ('r', 'p')`, [tenantColumn])
    return {
      plan: renderPlan(explained.Plan).join('\n'),
      json: result?.['QUERY PLAN'],
      executionMs: explained['Execution Time'],
      findings: judgePlan(explained.Plan, new Set(tables.map((table) => table.name)), tenantColumn)
    }
  } finally {
    // A failed rollback leaves the connection in an unknown state (maybe still the app role): not reused.
    await client.query('ROLLBACK').catch((error: Error) => { rollbackFailure = error })
    done(rollbackFailure)
  }
}
