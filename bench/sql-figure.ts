// The SQL-level figure: the W1 query filtered by RLS alone (app role, tenant setting set in the
// transaction) against the same query with a hand-written WHERE tenant_id = $1 (manual role, RLS
// bypassed), both through EXPLAIN ANALYZE on warm pages, interleaved over random tenants; at
// LIMIT 20 (W1) and at a whole tenant (1,000 rows), which separates the policy's fixed cost from
// any per-row cost. Both plans must use the (tenant_id, created_at desc) index, or the bench fails.
import pg from 'pg'
import { TENANT_INDEX } from './seed.js'
import { median } from './summary.js'

export interface SqlFigure {
  /** The LIMIT of the query measured. */
  limit: number
  samples: number
  /** Medians of PostgreSQL's own Execution Time and Planning Time, in milliseconds. */
  rls: { executionMs: number, planningMs: number }
  manual: { executionMs: number, planningMs: number }
  /** rls / manual, execution time. */
  executionRatio: number
  /** rls / manual, planning + execution. */
  totalRatio: number
  /** The plan shape each used, e.g. 'Limit > Index Scan using items_tenant_created_idx'. */
  plans: { rls: string, manual: string }
}

interface PlanNode {
  'Node Type': string
  'Index Name'?: string
  Plans?: PlanNode[]
}

interface Explained {
  Plan: PlanNode
  'Execution Time': number
  'Planning Time': number
}

const COLUMNS = 'SELECT id, created_at, title, amount FROM items'
const EXPLAIN = 'EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON)'

function shape (node: PlanNode): string {
  const here = node['Index Name'] === undefined ? node['Node Type'] : `${node['Node Type']} using ${node['Index Name']}`
  // InitPlans (the policy's one-time read of the setting) are leaves beside the main path.
  const main = node.Plans?.find((child) => !child['Node Type'].includes('Result'))
  return main === undefined ? here : `${here} > ${shape(main)}`
}

function explained (rows: Array<Record<string, unknown>>): Explained {
  const plan = (rows[0]?.['QUERY PLAN'] as Explained[] | undefined)?.[0]
  if (plan === undefined) throw new Error('EXPLAIN returned no plan')
  return plan
}

const order = (limit: number): string => `ORDER BY created_at DESC LIMIT ${limit}`

async function underRls (client: pg.Client, tenant: string, limit: number): Promise<Explained> {
  await client.query('BEGIN')
  await client.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenant])
  try {
    return explained((await client.query(`${EXPLAIN} ${COLUMNS} ${order(limit)}`)).rows)
  } finally {
    await client.query('ROLLBACK')
  }
}

async function byHand (client: pg.Client, tenant: string, limit: number): Promise<Explained> {
  return explained((await client.query(`${EXPLAIN} ${COLUMNS} WHERE tenant_id = $1 ${order(limit)}`, [tenant])).rows)
}

/** Runs both queries `samples` times each, alternating, on random tenants. */
export async function measureSqlFigure (appUrl: string, manualUrl: string, tenants: readonly string[], samples: number, limit: number): Promise<SqlFigure> {
  const app = new pg.Client({ connectionString: appUrl })
  const manual = new pg.Client({ connectionString: manualUrl })
  await Promise.all([app.connect(), manual.connect()])
  try {
    const rls: Explained[] = []
    const hand: Explained[] = []
    for (let i = 0; i < samples; i++) {
      const tenant = tenants[Math.floor(Math.random() * tenants.length)] ?? ''
      // Untimed first read: whichever query ran first on a tenant would pay its cold pages alone.
      await byHand(manual, tenant, limit)
      // Alternate which one goes first, so neither always benefits from the other's warm-up.
      if (i % 2 === 0) {
        rls.push(await underRls(app, tenant, limit))
        hand.push(await byHand(manual, tenant, limit))
      } else {
        hand.push(await byHand(manual, tenant, limit))
        rls.push(await underRls(app, tenant, limit))
      }
    }
    const plans = { rls: shape(rls[0]?.Plan ?? { 'Node Type': 'none' }), manual: shape(hand[0]?.Plan ?? { 'Node Type': 'none' }) }
    for (const [name, plan] of Object.entries(plans)) {
      if (!plan.includes(`Index Scan using ${TENANT_INDEX}`)) throw new Error(`the ${name} query does not use ${TENANT_INDEX}: ${plan}`)
    }
    const figures = (runs: Explained[]) => ({
      executionMs: median(runs.map((run) => run['Execution Time'])),
      planningMs: median(runs.map((run) => run['Planning Time']))
    })
    const total = (runs: Explained[]) => median(runs.map((run) => run['Execution Time'] + run['Planning Time']))
    const rlsFigures = figures(rls)
    const manualFigures = figures(hand)
    return {
      limit,
      samples,
      rls: rlsFigures,
      manual: manualFigures,
      executionRatio: rlsFigures.executionMs / manualFigures.executionMs,
      totalRatio: total(rls) / total(hand),
      plans
    }
  } finally {
    await Promise.all([app.end(), manual.end()])
  }
}
