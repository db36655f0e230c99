// What is measured: every (application, workload) pair the benchmark drives, and which pairs are
// compared. Shared by the server process (which builds the routes) and the driver (which loads them).

/** The Fastify applications, one pool each (of equal size), all in the same server process. */
export type AppName = 'plugin' | 'b0' | 'b1' | 'b2' | 'b3'

export const APP_LABELS: Record<AppName, string> = {
  plugin: 'fastify-tenant-rls',
  b0: 'B0 plain Fastify (+ JWT check)',
  b1: 'B1 raw pg, named query, manual WHERE',
  b2: 'B2 drizzle on a plain pool, manual WHERE',
  b3: 'B3 @fastify/postgres transact + drizzle, manual WHERE'
}

export interface Target {
  id: string
  app: AppName
  workload: 'W1' | 'W2' | 'W3' | 'W4'
  /** Short name in the table and chart. */
  label: string
  method: 'GET' | 'POST'
  path: string
}

export const TARGETS: readonly Target[] = [
  { id: 'W1-plugin', app: 'plugin', workload: 'W1', label: 'plugin', method: 'GET', path: '/w1' },
  { id: 'W1-plugin-prepared', app: 'plugin', workload: 'W1', label: 'plugin, prepared', method: 'GET', path: '/w1p' },
  { id: 'W1-b1', app: 'b1', workload: 'W1', label: 'B1 raw pg', method: 'GET', path: '/w1' },
  { id: 'W1-b2', app: 'b2', workload: 'W1', label: 'B2 drizzle', method: 'GET', path: '/w1' },
  { id: 'W1-b2-prepared', app: 'b2', workload: 'W1', label: 'B2 drizzle, prepared', method: 'GET', path: '/w1p' },
  { id: 'W1-b3', app: 'b3', workload: 'W1', label: 'B3 @fastify/postgres', method: 'GET', path: '/w1' },
  { id: 'W2-plugin', app: 'plugin', workload: 'W2', label: 'plugin', method: 'POST', path: '/w2' },
  { id: 'W2-b2', app: 'b2', workload: 'W2', label: 'B2 drizzle', method: 'POST', path: '/w2' },
  { id: 'W2-b3', app: 'b3', workload: 'W2', label: 'B3 @fastify/postgres', method: 'POST', path: '/w2' },
  { id: 'W3-plugin', app: 'plugin', workload: 'W3', label: 'plugin', method: 'GET', path: '/w3' },
  { id: 'W3-b0', app: 'b0', workload: 'W3', label: 'B0 plain Fastify', method: 'GET', path: '/w3' },
  { id: 'W4-plugin', app: 'plugin', workload: 'W4', label: 'plugin', method: 'GET', path: '/w4' },
  { id: 'W4-b2', app: 'b2', workload: 'W4', label: 'B2 drizzle', method: 'GET', path: '/w4' },
  { id: 'W4-b3', app: 'b3', workload: 'W4', label: 'B3 @fastify/postgres', method: 'GET', path: '/w4' }
]

/** Plugin target vs baseline target, with the threshold where it sets one (min or max). */
export interface Comparison {
  subject: string
  baseline: string
  metric: 'throughput' | 'p50 at c=1'
  /** Throughput must be at least this multiple; latency at most this multiple. */
  target?: number
}

export const COMPARISONS: readonly Comparison[] = [
  { subject: 'W1-plugin', baseline: 'W1-b2', metric: 'throughput', target: 0.8 },
  { subject: 'W1-plugin-prepared', baseline: 'W1-b2-prepared', metric: 'throughput', target: 0.8 },
  { subject: 'W1-plugin', baseline: 'W1-b3', metric: 'throughput', target: 1.1 },
  { subject: 'W1-plugin', baseline: 'W1-b1', metric: 'throughput' },
  { subject: 'W1-plugin', baseline: 'W1-b2', metric: 'p50 at c=1', target: 1.2 },
  { subject: 'W1-plugin-prepared', baseline: 'W1-b2-prepared', metric: 'p50 at c=1', target: 1.2 },
  { subject: 'W2-plugin', baseline: 'W2-b2', metric: 'throughput' },
  { subject: 'W2-plugin', baseline: 'W2-b3', metric: 'throughput' },
  { subject: 'W3-plugin', baseline: 'W3-b0', metric: 'throughput', target: 0.97 },
  { subject: 'W4-plugin', baseline: 'W4-b2', metric: 'throughput' },
  { subject: 'W4-plugin', baseline: 'W4-b3', metric: 'throughput' }
]
