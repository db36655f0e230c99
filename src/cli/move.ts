// `fastify-tenant-rls move`: moves one tenant to another database with moveTenant, connecting to
// both databases (the application role and an admin role on each) and to the placement table's
// owner; prints the steps done and the tables moved. Run again after a failure to resume.
import pg from 'pg'
import { moveTenant } from '../routing/move-tenant.js'
import type { MoveReport } from '../routing/move-tenant.js'
import { EXIT, UsageError } from './command.js'
import type { Subcommand } from './command.js'
import { requiredString, rowLines, SCOPE_HELP, SCOPE_OPTIONS, scopeFrom } from './lifecycle-options.js'

type Values = Record<string, unknown>

const URLS = ['from-url', 'from-admin-url', 'to-url', 'to-admin-url'] as const

/** Opens one pool per connection string (two for the placement table's owner: its lock holds one), runs `work`, ends them all. */
async function withPools<T> (urls: Record<string, string>, work: (pools: Record<string, pg.Pool>) => Promise<T>): Promise<T> {
  const pools = Object.fromEntries(Object.entries(urls).map(([name, connectionString]) =>
    [name, new pg.Pool({ connectionString, application_name: 'fastify-tenant-rls move', max: 2, connectionTimeoutMillis: 10_000 })]))
  try {
    return await work(pools)
  } finally {
    await Promise.all(Object.values(pools).map((pool) => pool.end()))
  }
}

function drainMs (values: Values): number | undefined {
  const given = values['drain-seconds']
  if (given === undefined) return undefined
  const seconds = Number(given)
  if (typeof given !== 'string' || !/^\d+$/.test(given) || !Number.isSafeInteger(seconds)) throw new UsageError(`--drain-seconds must be a whole number of seconds, got ${JSON.stringify(given)}`)
  return seconds * 1000
}

function tenantStatus (values: Values): { table: string, column?: string, key?: string } {
  const status: { table: string, column?: string, key?: string } = { table: typeof values['tenants-table'] === 'string' ? values['tenants-table'] : 'public.tenants' }
  if (typeof values['status-column'] === 'string') status.column = values['status-column']
  if (typeof values['key-column'] === 'string') status.key = values['key-column']
  return status
}

function describe (report: MoveReport): string {
  const resumed = report.resumedFrom === null ? '' : ` (resumed after step ${report.resumedFrom})`
  const width = Math.max(0, ...report.steps.map(({ step }) => step.length))
  const steps = report.steps.map(({ step, ms }) => `  ${step.padEnd(width)}  ${(ms / 1000).toFixed(3).padStart(8)} s\n`).join('')
  const tables = rowLines(report.tables.map(({ name, rows }) => ({ table: name, rows })), (index) => `  sha256 ${report.tables[index]?.sha256.slice(0, 16)}…`)
  return `Moved tenant ${report.tenantId} from ${report.source} to ${report.target}${resumed}\n${steps}` +
    `Rows on ${report.target}, checksums equal to the source's:\n${tables}`
}

export const moveCommand: Subcommand = {
  name: 'move',
  summary: 'move one tenant to another database and flip its placement (resumable)',
  help: `Usage: fastify-tenant-rls move --tenant <id> --from <name> --to <name> [connections] [options]

Moves the tenant's rows from one database to another and flips its row in the placement table, in
steps recorded there: mark it moving on the source (its requests get 503 + Retry-After), export,
import into the target (its tenants row 'moving' until done), verify checksums on both sides, mark
it active on the target and flip the placement, wait --drain-seconds so that no process still
routes to the source, check the source once more, erase the tenant from the source. Refuses a
target whose tenant tables differ (schema fingerprint) or that already holds the tenant.
After a failure or a crash, run the same command again: it goes on from the step reached.

  --tenant <id>             the tenant to move
  --from <name>             the source, by its name in the placement table
  --to <name>               the target, by the name the placement table will hold
  --from-url <url>          the application role on the source (export, checksums)
  --from-admin-url <url>    a role that may update the source's tenants table and erase the tenant
  --to-url <url>            the application role on the target (import, checksums)
  --to-admin-url <url>      a role that may insert and update the target's tenants table
  --placement-url <url>     the placement table's owner (default: --from-admin-url)
  --placement-table <name>  default public.tenant_placements
  --tenants-table <name>    the tenants table with the status column (default public.tenants)
  --status-column <name>    default status
  --key-column <name>       default id
  --directory <folder>      where the export file is kept until the move is done (default: .)
  --drain-seconds <n>       wait between the flip and the erasure: at least the apps' routeCacheMs
                            plus their longest request (default 40)
${SCOPE_HELP}
  --format text|json        json prints the report`,
  options: {
    ...SCOPE_OPTIONS,
    tenant: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    ...Object.fromEntries(URLS.map((name) => [name, { type: 'string' }])),
    'placement-url': { type: 'string' },
    'placement-table': { type: 'string' },
    'tenants-table': { type: 'string' },
    'status-column': { type: 'string' },
    'key-column': { type: 'string' },
    directory: { type: 'string' },
    'drain-seconds': { type: 'string' }
  },
  async run ({ values, format }, io) {
    const tenantId = requiredString(values, 'tenant')
    const from = requiredString(values, 'from')
    const to = requiredString(values, 'to')
    const urls = Object.fromEntries(URLS.map((name) => [name, requiredString(values, name)]))
    const placementUrl = typeof values['placement-url'] === 'string' ? values['placement-url'] : urls['from-admin-url'] as string
    const drain = drainMs(values)
    const progress = io.stderrIsTty ? (step: string) => { io.stderr.write(`move: ${step}\n`) } : undefined
    const report = await withPools({ ...urls, placement: placementUrl }, (pools) => moveTenant({
      ...scopeFrom(values),
      tenantId,
      source: { name: from, appPool: pools['from-url'] as pg.Pool, adminPool: pools['from-admin-url'] as pg.Pool },
      target: { name: to, appPool: pools['to-url'] as pg.Pool, adminPool: pools['to-admin-url'] as pg.Pool },
      placement: { pool: pools.placement as pg.Pool, ...(typeof values['placement-table'] === 'string' ? { table: values['placement-table'] } : {}) },
      tenantStatus: tenantStatus(values),
      directory: typeof values.directory === 'string' ? values.directory : '.',
      ...(drain === undefined ? {} : { drainMs: drain }),
      ...(progress === undefined ? {} : { onStep: progress })
    }))
    io.stdout.write(format === 'json' ? `${JSON.stringify(report, null, 2)}\n` : describe(report))
    return EXIT.ok
  }
}
