// Writes a run's results: bench/results/results.json (everything, rounds included),
// results.md (the tables the README quotes) and chart.svg (throughput per target, drawn by hand:
// a dozen rectangles need no charting library).
import { mkdir, writeFile } from 'node:fs/promises'
import type { DrizzleCost } from './drizzle-cost.js'
import type { SqlFigure, SqlPair } from './sql-figure.js'
import type { StatementProfile } from './statement-profile.js'
import type { ComparisonSummary, Measurement, TargetSummary } from './summary.js'
import { APP_LABELS, SQL_PREPARED_TARGET, isPluginApp } from './targets.js'

export interface Machine {
  cpus: number
  cpuModel: string
  memoryGiB: number
  node: string
  postgres: string
  server: string
}

export interface Results {
  startedAt: string
  durationSeconds: number
  seedSeconds: number
  command: string
  /** The target ids a focused run (BENCH_TARGETS) loaded; null for a full run. */
  focus: string[] | null
  machine: Machine
  settings: Record<string, number>
  targets: TargetSummary[]
  comparisons: ComparisonSummary[]
  /** Empty, like drizzle null, in a focused run. */
  sql: SqlFigure[]
  drizzle: DrizzleCost | null
  /** null when pg_stat_statements was not available. */
  statementProfiles: StatementProfile[] | null
  rounds: Measurement[]
}

const RESULTS_DIR = new URL('results/', import.meta.url)

const fixed = (value: number, digits = 2): string => Number.isFinite(value) ? value.toFixed(digits) : 'n/a'

function escapeXml (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

export function markdown (results: Results): string {
  const { machine, settings } = results
  const focused = results.focus === null
    ? ''
    : `**Focused run, not a full one** (BENCH_TARGETS=${results.focus.join(',')}): only these targets were loaded, and the SQL-level and drizzle figures were skipped. `
  const lines = [
    `${focused}Run of ${results.startedAt} (${fixed(results.durationSeconds, 0)} s end to end, seed ${fixed(results.seedSeconds, 0)} s): ` +
      `${machine.cpus} cores (${machine.cpuModel}), ${fixed(machine.memoryGiB, 1)} GiB, Node ${machine.node}, ${machine.postgres} (${machine.server}). ` +
      `${settings.rounds} interleaved rounds; per round and target ${settings.loadSeconds} s of autocannon at c=${settings.connections} ` +
      `and ${settings.sequentialRequests} sequential requests (c=1); pools of ${settings.poolSize}, idleTimeoutMillis 0. Medians over rounds.`,
    '',
    '| Workload | Variant | req/s | p50 ms | p99 ms | p50 ms c=1 | p99 ms c=1 | round trips/req | statements/req | checkouts/req | connection held ms/req | app CPU µs/req c=1 | PostgreSQL CPU µs/req c=1 |',
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|'
  ]
  for (const target of results.targets) {
    lines.push(`| ${target.workload} | ${target.label} | ${fixed(target.requestsPerSecond, 0)} | ${fixed(target.p50, 1)} | ${fixed(target.p99, 1)} | ` +
      `${fixed(target.sequentialP50, 3)} | ${fixed(target.sequentialP99, 3)} | ${fixed(target.roundTrips)} | ${fixed(target.statements)} | ` +
      `${fixed(target.checkouts)} | ${fixed(target.holdMs, 3)} | ${fixed(target.cpuAppMicros, 0)} | ${fixed(target.cpuPostgresMicros, 0)} |`)
  }
  lines.push('', '| Ratio (same run, median of per-round ratios) | Metric | Ratio | Range over rounds | Target | Met |', '|---|---|--:|--:|--:|---|')
  for (const comparison of results.comparisons) {
    const target = comparison.target === undefined ? '' : `${comparison.metric === 'throughput' ? '≥' : '≤'} ${comparison.target}`
    const met = comparison.met === undefined ? '' : comparison.met ? 'yes' : '**no**'
    lines.push(`| ${comparison.subject} / ${comparison.baseline} | ${comparison.metric} | ${fixed(comparison.ratio)} | ${fixed(comparison.low)}–${fixed(comparison.high)} | ${target} | ${met} |`)
  }
  if (results.sql.length > 0) lines.push('', ...sqlTable(results))
  lines.push('', ...statementTable(results))
  if (results.drizzle !== null) {
    lines.push(
      '',
      `drizzle construction per request (${results.drizzle.iterations} iterations): the plugin's request.db ${fixed(results.drizzle.pluginRequestDb / 1000, 2)} µs; ` +
        `drizzle(pool) ${fixed(results.drizzle.drizzlePerRequest / 1000, 2)} µs; drizzle(pool, { schema }) ${fixed(results.drizzle.drizzleWithSchemaPerRequest / 1000, 2)} µs.`
    )
  }
  lines.push(
    '',
    'CPU per request at c=1: the server process\'s user + system time (every app runs in it; `process.cpuUsage()`) and the time on CPU of the bench database\'s ' +
      `client backends (\`/proc/<pid>/schedstat\`), read just before and after the ${settings.sequentialRequests} sequential requests and divided by them; ` +
      'one request at a time, where it is the request\'s own work, without the run-queue effects of c=10 on few cores. ' +
      "PostgreSQL's is n/a when the server does not run on the bench's machine (DATABASE_URL elsewhere), and so is the ratio that adds it.",
    '',
    `Variants: ${Object.values(APP_LABELS).join('; ')}.`,
    '',
    "B4's checkouts and connection hold time are n/a: postgres.js queues (and pipelines) queries onto its connections, with no checkout; " +
      'its round trips and statements are counted from the messages its sockets receive.'
  )
  return lines.join('\n') + '\n'
}

function sqlTable (results: Results): string[] {
  const lines = [
    `SQL level (EXPLAIN ANALYZE, ${results.sql[0]?.samples ?? 0} interleaved samples of each, random tenants, medians, warm pages; ` +
      "PostgreSQL's own Planning Time and Execution Time: parsing, analysis and rewriting, where the policy is added, are in neither). " +
      'Unprepared: sent as text, planned every time. Prepared: PREPAREd once per connection, then EXECUTEd; planning is fetching the cached ' +
      'plan unless PostgreSQL plans a custom one (counts from pg_prepared_statements):',
    '',
    '| Query | Sent | RLS only (app role): execution + planning ms | manual WHERE (RLS bypassed): execution + planning ms | execution ratio | execution + planning ratio | Target | Met | plan (both) |',
    '|---|---|--:|--:|--:|--:|--:|---|---|'
  ]
  for (const figure of results.sql) {
    const query = figure.limit === 20 ? 'W1: newest 20 rows' : `whole tenant: newest ${figure.limit} rows`
    const { rls, manual } = figure.prepared.planCache
    const cache = `prepared (generic/custom plans: RLS ${rls.generic}/${rls.custom}, manual ${manual.generic}/${manual.custom})`
    const met = figure.prepared.totalRatio <= SQL_PREPARED_TARGET ? 'yes' : '**no**'
    lines.push(sqlRow(query, 'unprepared', figure.unprepared, '', ''), sqlRow(query, cache, figure.prepared, `≤ ${SQL_PREPARED_TARGET}`, met))
  }
  return lines
}

function sqlRow (query: string, sent: string, pair: SqlPair, target: string, met: string): string {
  const plan = pair.plans.rls === pair.plans.manual ? `\`${pair.plans.rls}\`` : `RLS \`${pair.plans.rls}\`; manual \`${pair.plans.manual}\``
  return `| ${query} | ${sent} | ${fixed(pair.rls.executionMs, 3)} + ${fixed(pair.rls.planningMs, 3)} | ` +
    `${fixed(pair.manual.executionMs, 3)} + ${fixed(pair.manual.planningMs, 3)} | ${fixed(pair.executionRatio, 3)} | ${fixed(pair.totalRatio, 3)} | ` +
    `${target} | ${met} | ${plan} |`
}

function statementTable (results: Results): string[] {
  if (results.statementProfiles === null) return ['Database time per request: skipped, pg_stat_statements was not available.']
  const lines = [
    `Database time per request (pg_stat_statements, planning + execution, one extra ${results.settings.profileSeconds} s pass per target at c=${results.settings.connections}; ` +
      'protocol handling, parsing and waits are not in it):',
    '',
    '| Target | µs per request | by statement (µs per request) |',
    '|---|--:|---|'
  ]
  for (const profile of results.statementProfiles) {
    const parts = profile.statements.filter((cost) => cost.callsPerRequest >= 0.5)
      .map((cost) => `\`${cost.statement.length > 48 ? `${cost.statement.slice(0, 48)}…` : cost.statement}\` ${fixed(cost.microseconds, 1)}`)
    lines.push(`| ${profile.target} | ${fixed(profile.microseconds, 1)} | ${parts.join('; ').replace(/\|/g, '\\|')} |`)
  }
  return lines
}

export function chart (results: Results): string {
  const rowHeight = 22
  const labelWidth = 250
  const barWidth = 440
  const top = 40
  const targets = results.targets
  const height = top + targets.length * rowHeight + 40
  const width = labelWidth + barWidth + 90
  const max = Math.max(...targets.map((target) => target.requestsPerSecond).filter(Number.isFinite), 1)
  const rows = targets.map((target, index) => {
    const y = top + index * rowHeight
    const length = Number.isFinite(target.requestsPerSecond) ? (target.requestsPerSecond / max) * barWidth : 0
    const colour = isPluginApp(target.app) ? '#2b6cb0' : '#a0aec0'
    return [
      `<text x="${labelWidth - 8}" y="${y + 15}" text-anchor="end">${escapeXml(`${target.workload} ${target.label}`)}</text>`,
      `<rect x="${labelWidth}" y="${y + 3}" width="${length.toFixed(1)}" height="${rowHeight - 6}" fill="${colour}"/>`,
      `<text x="${(labelWidth + length + 6).toFixed(1)}" y="${y + 15}">${fixed(target.requestsPerSecond, 0)}</text>`
    ].join('')
  })
  const { machine } = results
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${labelWidth}" y="20" font-size="14" font-weight="bold">Requests per second under load (c=${results.settings.connections}), median of ${results.settings.rounds} rounds</text>`,
    ...rows,
    `<text x="${labelWidth}" y="${height - 14}" fill="#4a5568">blue: fastify-tenant-rls; grey: baselines. ${machine.cpus} cores, Node ${escapeXml(machine.node)}, ${escapeXml(results.startedAt)}</text>`,
    '</svg>'
  ].join('\n') + '\n'
}

/** Writes results.json, results.md and chart.svg; returns the Markdown. */
export async function writeResults (results: Results): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true })
  const table = markdown(results)
  await writeFile(new URL('results.json', RESULTS_DIR), JSON.stringify(results, null, 2) + '\n')
  await writeFile(new URL('results.md', RESULTS_DIR), table)
  await writeFile(new URL('chart.svg', RESULTS_DIR), chart(results))
  return table
}
