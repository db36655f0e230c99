// `npm run bench`: starts (or reaches) PostgreSQL, seeds it once, takes the SQL-level and drizzle
// figures, then starts the server process with every variant and drives the targets in
// interleaved rounds (each round runs every target once, in an order rotated per round, so no
// target always runs first or last), and writes bench/results/. Tunable for a quick look with
// BENCH_ROUNDS and BENCH_SECONDS; BENCH_TARGETS (comma-separated target ids from targets.ts, e.g.
// W1-plugin,W1-plugin-signed) loads only those targets and skips the SQL-level and drizzle figures,
// for a focused comparison (results.md's first line says so). The committed results use the defaults.
import { fork } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { cpus, totalmem } from 'node:os'
import { fileURLToPath } from 'node:url'
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import pg from 'pg'
import type { AppSettings } from './apps.js'
import { measureDrizzleCost } from './drizzle-cost.js'
import { sequential, underLoad } from './load.js'
import type { Load } from './load.js'
import { microsecondsBetween, openPostgresCpu } from './postgres-cpu.js'
import type { PostgresCpu } from './postgres-cpu.js'
import { startBenchServer } from './postgres.js'
import { writeResults } from './report.js'
import type { Machine } from './report.js'
import { ROWS, TENANTS, seed } from './seed.js'
import type { ServerReady, Snapshot } from './server.js'
import { measureSqlFigure } from './sql-figure.js'
import { prepareStatementProfiler } from './statement-profile.js'
import type { StatementProfile, StatementProfiler } from './statement-profile.js'
import { summarizeComparisons, summarizeTargets } from './summary.js'
import type { Measurement } from './summary.js'
import { selectTargets } from './targets.js'
import type { Target } from './targets.js'

const settings = {
  rounds: Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5)),
  loadSeconds: Math.max(1, Number(process.env.BENCH_SECONDS ?? 3)),
  warmupSeconds: 1,
  connections: 10,
  poolSize: 10,
  sequentialRequests: 200,
  sqlSamples: 300,
  profileSeconds: 2,
  drizzleIterations: 200_000
}
const JWT_SECRET = 'a-benchmark-secret-that-is-long-enough-for-hs256'
const TUNING = ['BENCH_ROUNDS', 'BENCH_SECONDS', 'BENCH_TARGETS'] as const
const targets = selectTargets(process.env.BENCH_TARGETS)
/** The target ids of a focused run (BENCH_TARGETS set), null for a full one. */
const focus = (process.env.BENCH_TARGETS ?? '').trim() === '' ? null : targets.map((target) => target.id)

function log (message: string): void {
  process.stderr.write(`[bench] ${message}\n`)
}

async function signTokens (tenants: readonly string[]): Promise<string[]> {
  const signer = Fastify()
  await signer.register(fastifyJwt, { secret: JWT_SECRET })
  await signer.ready()
  const tokens = tenants.map((tenant) => signer.jwt.sign({ tenant_id: tenant }))
  await signer.close()
  return tokens
}

async function describeMachine (adminUrl: string, server: string): Promise<Machine> {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  const { rows } = await client.query<{ server_version: string }>('SHOW server_version')
  await client.end()
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: totalmem() / 2 ** 30,
    node: process.version,
    postgres: `PostgreSQL ${rows[0]?.server_version ?? '?'}`,
    server
  }
}

function startServerProcess (appSettings: AppSettings): Promise<{ child: ChildProcess, ready: ServerReady }> {
  const child = fork(fileURLToPath(new URL('server.ts', import.meta.url)), {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, BENCH_SERVER_SETTINGS: JSON.stringify(appSettings) }
  })
  return new Promise((resolve, reject) => {
    child.once('message', (ready) => resolve({ child, ready: ready as ServerReady }))
    child.once('exit', (code) => reject(new Error(`the server process exited with code ${String(code)}`)))
  })
}

async function snapshot (ready: ServerReady): Promise<Snapshot> {
  const response = await fetch(`http://127.0.0.1:${ready.control}/snapshot`)
  return await response.json() as Snapshot
}

function perRequest (target: Target, before: Snapshot, after: Snapshot): Measurement['perRequest'] {
  const served = (after.served[target.app] ?? 0) - (before.served[target.app] ?? 0)
  const start = before.traffic[target.app]
  const end = after.traffic[target.app]
  // A figure the app's traffic does not have (a postgres.js client's checkouts) is NaN, shown as n/a.
  const per = (pick: (traffic: NonNullable<typeof end>) => number | undefined): number => {
    if (start === undefined || end === undefined) return 0
    const [before, after] = [pick(start), pick(end)]
    return before === undefined || after === undefined ? Number.NaN : (after - before) / served
  }
  return {
    roundTrips: per((traffic) => traffic.roundTrips),
    statements: per((traffic) => traffic.statements),
    checkouts: per((traffic) => 'checkouts' in traffic ? traffic.checkouts : undefined),
    holdMs: per((traffic) => 'holdMs' in traffic ? traffic.holdMs : undefined)
  }
}

async function measure (round: number, target: Target, load: Load, ready: ServerReady, postgresCpu: PostgresCpu): Promise<Measurement> {
  const before = await snapshot(ready)
  const loaded = await underLoad(load, settings.connections, settings.loadSeconds)
  // CPU time is read around the c=1 phase only: under load it would carry run-queue effects (postgres-cpu.ts).
  const appBefore = await snapshot(ready)
  const postgresBefore = await postgresCpu.sample()
  const single = await sequential(load, settings.sequentialRequests)
  const postgresAfter = await postgresCpu.sample()
  const after = await snapshot(ready)
  const cpu = {
    appMicros: (after.cpuMicros - appBefore.cpuMicros) / single.requests,
    postgresMicros: microsecondsBetween(postgresBefore, postgresAfter) / single.requests
  }
  return { round, target: target.id, load: loaded, sequential: single, perRequest: perRequest(target, before, after), cpu }
}

/** One more short load pass per database target, with pg_stat_statements tracking on. */
async function profileStatements (profiler: StatementProfiler, loadOf: (target: Target) => Load, ready: ServerReady): Promise<StatementProfile[]> {
  const profiles: StatementProfile[] = []
  for (const target of targets.filter((candidate) => candidate.workload !== 'W3')) {
    const before = await snapshot(ready)
    await profiler.start()
    await underLoad(loadOf(target), settings.connections, settings.profileSeconds)
    const after = await snapshot(ready)
    profiles.push(await profiler.read(target.id, (after.served[target.app] ?? 0) - (before.served[target.app] ?? 0)))
  }
  return profiles
}

function rotated<T> (list: readonly T[], by: number): T[] {
  const shift = by % list.length
  return [...list.slice(shift), ...list.slice(0, shift)]
}

const startedAt = new Date()
const started = process.hrtime.bigint()
const server = await startBenchServer()
try {
  log(`PostgreSQL: ${server.kind}; seeding (reused when already seeded)`)
  const seeded = await seed(server.adminUrl)
  log(`seed: ${seeded.seedSeconds > 0 ? `${seeded.seedSeconds.toFixed(1)} s` : 'reused'}; ${focus === null ? 'SQL-level figure' : `focused run of ${focus.join(', ')}`}`)
  const sql = focus !== null
    ? []
    : [
        await measureSqlFigure(seeded.appUrl, seeded.manualUrl, seeded.tenants, settings.sqlSamples, 20),
        await measureSqlFigure(seeded.appUrl, seeded.manualUrl, seeded.tenants, settings.sqlSamples, ROWS / TENANTS)
      ]
  const drizzle = focus !== null ? null : measureDrizzleCost(settings.drizzleIterations)
  const tokens = await signTokens(seeded.tenants)
  const machine = await describeMachine(seeded.adminUrl, server.kind)
  const profiler = await prepareStatementProfiler(seeded.adminUrl)
  const postgresCpu = await openPostgresCpu(seeded.adminUrl)
  const { child, ready } = await startServerProcess({ appUrl: seeded.appUrl, manualUrl: seeded.manualUrl, signedUrl: seeded.signedUrl, systemUrl: seeded.systemUrl, jwtSecret: JWT_SECRET, poolSize: settings.poolSize })
  const rounds: Measurement[] = []
  let statementProfiles: StatementProfile[] | null = null
  try {
    const loadOf = (target: Target): Load => ({ port: ready.ports[target.app], target, tokens })
    log('warm-up')
    for (const target of targets) await underLoad(loadOf(target), settings.connections, settings.warmupSeconds)
    for (let round = 1; round <= settings.rounds; round++) {
      log(`round ${round} of ${settings.rounds}`)
      for (const target of rotated(targets, round - 1)) rounds.push(await measure(round, target, loadOf(target), ready, postgresCpu))
    }
    if (profiler !== undefined) {
      log('statement profile (pg_stat_statements)')
      statementProfiles = await profileStatements(profiler, loadOf, ready)
    } else {
      log('statement profile skipped: pg_stat_statements is not available on this server')
    }
  } finally {
    await profiler?.close()
    await postgresCpu.close()
    child.removeAllListeners('exit')
    child.send('stop')
    await new Promise((resolve) => child.once('exit', resolve))
  }
  const table = await writeResults({
    startedAt: startedAt.toISOString(),
    durationSeconds: Number(process.hrtime.bigint() - started) / 1e9,
    seedSeconds: seeded.seedSeconds,
    command: [...TUNING.flatMap((name) => process.env[name] ? [`${name}=${process.env[name]}`] : []), 'npm run bench'].join(' '),
    focus,
    machine,
    settings,
    targets: summarizeTargets(rounds),
    comparisons: summarizeComparisons(rounds),
    sql,
    drizzle,
    statementProfiles,
    rounds
  })
  process.stdout.write(table)
} finally {
  await server.stop()
}
