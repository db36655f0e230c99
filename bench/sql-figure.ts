// The SQL-level figure: the W1 query filtered by RLS alone (app role, tenant setting set in the
// transaction) against the same query with a hand-written WHERE tenant_id = $1 (manual role, RLS
// bypassed), both through EXPLAIN ANALYZE on warm pages, interleaved over random tenants; at
// LIMIT 20 (W1) and at a whole tenant (1,000 rows), which separates the policy's fixed cost from
// any per-row cost. Each is measured twice: sent as text (planned on every execution) and
// PREPAREd once on its connection then EXPLAIN EXECUTEd, where planning is only fetching the cached
// plan unless PostgreSQL chooses a custom plan; pg_prepared_statements says which it chose. Every
// plan must use the (tenant_id, created_at desc) index, or the bench fails.
import pg from 'pg'
import { TENANT_INDEX } from './seed.js'
import { median } from './summary.js'

/** Medians of PostgreSQL's own Execution Time and Planning Time, in milliseconds. */
export interface SqlTimes {
  executionMs: number
  planningMs: number
}

/** The RLS query against the manual WHERE, sent one way. */
export interface SqlPair {
  rls: SqlTimes
  manual: SqlTimes
  /** rls / manual, execution time. */
  executionRatio: number
  /** rls / manual, planning + execution. */
  totalRatio: number
  /** The plan shape each used, e.g. 'Limit > Index Scan using items_tenant_created_idx'. */
  plans: { rls: string, manual: string }
}

/** How often a prepared statement's executions used the cached generic plan or planned a custom one. */
export interface PlanCacheCounts {
  generic: number
  custom: number
}

export interface SqlFigure {
  /** The LIMIT of the query measured. */
  limit: number
  samples: number
  /** Sent as text every time: parsed, analysed, rewritten and planned on every execution. */
  unprepared: SqlPair
  /** PREPAREd once per connection, then EXECUTEd. */
  prepared: SqlPair & { planCache: { rls: PlanCacheCounts, manual: PlanCacheCounts } }
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
const PREPARED_RLS = 'bench_sql_figure_rls'
const PREPARED_MANUAL = 'bench_sql_figure_manual'

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

/** `statement` explained in a transaction with the tenant set, as the plugin runs it. */
async function underRls (client: pg.Client, tenant: string, statement: string): Promise<Explained> {
  await client.query('BEGIN')
  await client.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenant])
  try {
    return explained((await client.query(`${EXPLAIN} ${statement}`)).rows)
  } finally {
    await client.query('ROLLBACK')
  }
}

async function byHand (client: pg.Client, tenant: string, limit: number): Promise<Explained> {
  return explained((await client.query(`${EXPLAIN} ${COLUMNS} WHERE tenant_id = $1 ${order(limit)}`, [tenant])).rows)
}

// EXPLAIN EXECUTE's arguments are parsed as part of the EXPLAIN, which cannot infer the type of a
// bound parameter there: the tenant goes in as a quoted literal (it comes from the seed's own table).
async function byHandPrepared (client: pg.Client, tenant: string): Promise<Explained> {
  return explained((await client.query(`${EXPLAIN} EXECUTE ${PREPARED_MANUAL}(${client.escapeLiteral(tenant)})`)).rows)
}

async function planCache (client: pg.Client, name: string): Promise<PlanCacheCounts> {
  const { rows } = await client.query<{ generic: string, custom: string }>(
    'SELECT generic_plans AS generic, custom_plans AS custom FROM pg_prepared_statements WHERE name = $1', [name])
  return { generic: Number(rows[0]?.generic ?? 0), custom: Number(rows[0]?.custom ?? 0) }
}

function pairOf (rls: readonly Explained[], hand: readonly Explained[]): SqlPair {
  const times = (runs: readonly Explained[]): SqlTimes => ({
    executionMs: median(runs.map((run) => run['Execution Time'])),
    planningMs: median(runs.map((run) => run['Planning Time']))
  })
  const total = (runs: readonly Explained[]) => median(runs.map((run) => run['Execution Time'] + run['Planning Time']))
  const plans = { rls: shape(rls[0]?.Plan ?? { 'Node Type': 'none' }), manual: shape(hand[0]?.Plan ?? { 'Node Type': 'none' }) }
  for (const [name, plan] of Object.entries(plans)) {
    if (!plan.includes(`Index Scan using ${TENANT_INDEX}`)) throw new Error(`the ${name} query does not use ${TENANT_INDEX}: ${plan}`)
  }
  const [rlsTimes, manualTimes] = [times(rls), times(hand)]
  return {
    rls: rlsTimes,
    manual: manualTimes,
    executionRatio: rlsTimes.executionMs / manualTimes.executionMs,
    totalRatio: total(rls) / total(hand),
    plans
  }
}

/** Runs the four queries `samples` times each, in an order rotated per sample, on random tenants. */
export async function measureSqlFigure (appUrl: string, manualUrl: string, tenants: readonly string[], samples: number, limit: number): Promise<SqlFigure> {
  const app = new pg.Client({ connectionString: appUrl })
  const manual = new pg.Client({ connectionString: manualUrl })
  await Promise.all([app.connect(), manual.connect()])
  try {
    await app.query(`PREPARE ${PREPARED_RLS} AS ${COLUMNS} ${order(limit)}`)
    await manual.query(`PREPARE ${PREPARED_MANUAL}(uuid) AS ${COLUMNS} WHERE tenant_id = $1 ${order(limit)}`)
    const runs = { rls: [] as Explained[], manual: [] as Explained[], preparedRls: [] as Explained[], preparedManual: [] as Explained[] }
    const queries: Array<(tenant: string) => Promise<void>> = [
      async (tenant) => { runs.rls.push(await underRls(app, tenant, `${COLUMNS} ${order(limit)}`)) },
      async (tenant) => { runs.manual.push(await byHand(manual, tenant, limit)) },
      async (tenant) => { runs.preparedRls.push(await underRls(app, tenant, `EXECUTE ${PREPARED_RLS}`)) },
      async (tenant) => { runs.preparedManual.push(await byHandPrepared(manual, tenant)) }
    ]
    for (let i = 0; i < samples; i++) {
      const tenant = tenants[Math.floor(Math.random() * tenants.length)] ?? ''
      // Untimed first read: whichever query ran first on a tenant would pay its cold pages alone.
      await byHand(manual, tenant, limit)
      // Rotate which one goes first, so none always benefits from the others' warm-up.
      for (let k = 0; k < queries.length; k++) await queries[(i + k) % queries.length]?.(tenant)
    }
    return {
      limit,
      samples,
      unprepared: pairOf(runs.rls, runs.manual),
      prepared: {
        ...pairOf(runs.preparedRls, runs.preparedManual),
        planCache: { rls: await planCache(app, PREPARED_RLS), manual: await planCache(manual, PREPARED_MANUAL) }
      }
    }
  } finally {
    await Promise.all([app.end(), manual.end()])
  }
}
