// Turns the rounds into figures: per target, the median of each measure over the rounds; per
// comparison, the ratio within each round (both sides measured minutes apart at most) and the
// median of those ratios, checked against the target. Only what was run is summarised: a
// focused run (BENCH_TARGETS) has no row for the other targets and no comparison missing a side.
import { COMPARISONS, TARGETS } from './targets.js'
import type { Comparison, Target } from './targets.js'
import type { LoadFigures } from './load.js'

/** One target measured once: under load, sequentially, and what its requests cost on the wire and in CPU. */
export interface Measurement {
  round: number
  target: string
  load: LoadFigures
  sequential: LoadFigures
  perRequest: { roundTrips: number, statements: number, checkouts: number, holdMs: number }
  /** CPU microseconds per request during the sequential phase (c=1): the server process's, and PostgreSQL's (NaN when not local). */
  cpu: { appMicros: number, postgresMicros: number }
}

export interface TargetSummary extends Target {
  requestsPerSecond: number
  p50: number
  p99: number
  sequentialP50: number
  sequentialP99: number
  roundTrips: number
  statements: number
  checkouts: number
  holdMs: number
  cpuAppMicros: number
  cpuPostgresMicros: number
}

export interface ComparisonSummary extends Comparison {
  /** Median over rounds of subject / baseline. */
  ratio: number
  low: number
  high: number
  met: boolean | undefined
}

export function median (values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  if (sorted.length === 0) return Number.NaN
  return sorted.length % 2 === 1 ? sorted[middle] ?? Number.NaN : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2
}

function medianOf (runs: readonly Measurement[], pick: (run: Measurement) => number): number {
  return median(runs.map(pick))
}

function wasRun (measurements: readonly Measurement[], id: string): boolean {
  return measurements.some((run) => run.target === id)
}

export function summarizeTargets (measurements: readonly Measurement[]): TargetSummary[] {
  return TARGETS.filter((target) => wasRun(measurements, target.id)).map((target) => {
    const runs = measurements.filter((run) => run.target === target.id)
    return {
      ...target,
      requestsPerSecond: medianOf(runs, (run) => run.load.requestsPerSecond),
      p50: medianOf(runs, (run) => run.load.p50),
      p99: medianOf(runs, (run) => run.load.p99),
      sequentialP50: medianOf(runs, (run) => run.sequential.p50),
      sequentialP99: medianOf(runs, (run) => run.sequential.p99),
      roundTrips: medianOf(runs, (run) => run.perRequest.roundTrips),
      statements: medianOf(runs, (run) => run.perRequest.statements),
      checkouts: medianOf(runs, (run) => run.perRequest.checkouts),
      holdMs: medianOf(runs, (run) => run.perRequest.holdMs),
      cpuAppMicros: medianOf(runs, (run) => run.cpu.appMicros),
      cpuPostgresMicros: medianOf(runs, (run) => run.cpu.postgresMicros)
    }
  })
}

/** What each metric compares; throughput is the one where more is better. */
const MEASURE: Record<Comparison['metric'], (run: Measurement) => number> = {
  throughput: (run) => run.load.requestsPerSecond,
  'p50 at c=1': (run) => run.sequential.p50,
  'CPU per request at c=1': (run) => run.cpu.appMicros + run.cpu.postgresMicros
}

function ratioIn (runs: readonly Measurement[], comparison: Comparison, round: number): number | undefined {
  const subject = runs.find((run) => run.round === round && run.target === comparison.subject)
  const baseline = runs.find((run) => run.round === round && run.target === comparison.baseline)
  if (subject === undefined || baseline === undefined) return undefined
  const measure = MEASURE[comparison.metric]
  return measure(subject) / measure(baseline)
}

export function summarizeComparisons (measurements: readonly Measurement[]): ComparisonSummary[] {
  const rounds = [...new Set(measurements.map((run) => run.round))]
  const bothRun = (comparison: Comparison): boolean => wasRun(measurements, comparison.subject) && wasRun(measurements, comparison.baseline)
  return COMPARISONS.filter(bothRun).map((comparison) => {
    // A NaN ratio (PostgreSQL's CPU time where the server is not local) would scramble the median's sort.
    const ratios = rounds.map((round) => ratioIn(measurements, comparison, round))
      .filter((ratio): ratio is number => ratio !== undefined && Number.isFinite(ratio))
    const ratio = median(ratios)
    const met = comparison.target === undefined || !Number.isFinite(ratio)
      ? undefined
      : comparison.metric === 'throughput' ? ratio >= comparison.target : ratio <= comparison.target
    return { ...comparison, ratio, low: Math.min(...ratios), high: Math.max(...ratios), met }
  })
}
