// What is measured: every (application, workload) pair the benchmark drives, and which pairs are
// compared. Shared by the server process (which builds the routes) and the driver (which loads them).
import type { FastifyTenantRlsSettings, TenantRouteOptions } from 'fastify-tenant-rls'
import { BENCH_SIGNING_KEY } from './seed.js'

/**
 * One configuration of the plugin, served as an app of its own (own registration, own pool of the
 * same size), so that configurations are compared in one run like the baselines. To measure a new
 * mode, add a variant here and a target row below that names its `app`; every variant serves
 * every workload's route, and only the targets decide what is loaded.
 */
export interface PluginVariant {
  app: string
  /** What the variant is, in the results' list of variants. */
  description: string
  /** Register options on top of the bench's own pool and schema. */
  settings: FastifyTenantRlsSettings
  /** Applied to each of the variant's routes as `config: { tenant: route }`. */
  route: TenantRouteOptions
  /** Also give the plugin a pool of the seed's system role as `systemPool` (a pool cannot be a constant here). */
  systemPool?: true
}

export const PLUGIN_VARIANTS = [
  { app: 'plugin', description: 'fastify-tenant-rls, default options', settings: {}, route: {} },
  { app: 'plugin-single', description: 'fastify-tenant-rls, each query in one round trip (singleRoundTrip, read only)', settings: {}, route: { singleRoundTrip: true } },
  { app: 'plugin-unprepared', description: 'fastify-tenant-rls, route queries not prepared (preparedRouteQueries: 0)', settings: { preparedRouteQueries: 0 }, route: {} },
  { app: 'plugin-signed', description: 'fastify-tenant-rls, signed tenant context (signedContext; the signed policy)', settings: { signedContext: { keys: [BENCH_SIGNING_KEY] } }, route: {} },
  // Issue 13: elevated access must not slow ordinary requests. Every option set, no token with an actor.
  // W1's and W4's route queries bind a parameter PostgreSQL keeps on custom plans (planned on every
  // request): what planning each query once per connection saves.
  { app: 'plugin-generic', description: 'fastify-tenant-rls, route queries on generic plans (planCacheMode: force_generic_plan)', settings: { planCacheMode: 'force_generic_plan' }, route: {} },
  { app: 'plugin-signed-generic', description: 'fastify-tenant-rls, signed tenant context and route queries on generic plans', settings: { signedContext: { keys: [BENCH_SIGNING_KEY] }, planCacheMode: 'force_generic_plan' }, route: {} },
  { app: 'plugin-elevated', description: 'fastify-tenant-rls, elevated access configured but unused (systemPool, actorClaim, grantsTable, auditTable; no token carries an actor)', settings: { actorClaim: 'act.sub', grantsTable: 'public.tenant_rls_grants', auditTable: 'public.tenant_rls_audit' }, route: {}, systemPool: true }
] as const satisfies readonly PluginVariant[]

/** The baselines, each built by its own function in apps.ts. */
export const BASELINE_LABELS = {
  b0: 'B0 plain Fastify (+ JWT check)',
  b1: 'B1 raw pg, named query, manual WHERE',
  b2: 'B2 drizzle on a plain pool, manual WHERE',
  b3: 'B3 @fastify/postgres transact + drizzle, manual WHERE',
  b4: 'B4 drizzle on postgres.js with every query prepared, as postgres.js prepares its own queries by default, manual WHERE'
} as const

export type PluginAppName = typeof PLUGIN_VARIANTS[number]['app']
export type BaselineName = keyof typeof BASELINE_LABELS

/** The Fastify applications, one pool each (of equal size), all in the same server process. */
export type AppName = PluginAppName | BaselineName

export const APP_LABELS: Record<AppName, string> = {
  ...Object.fromEntries(PLUGIN_VARIANTS.map((variant) => [variant.app, variant.description])) as Record<PluginAppName, string>,
  ...BASELINE_LABELS
}

export function isPluginApp (app: AppName): app is PluginAppName {
  return PLUGIN_VARIANTS.some((variant) => variant.app === app)
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
  { id: 'W1-plugin-single', app: 'plugin-single', workload: 'W1', label: 'plugin, single round trip', method: 'GET', path: '/w1' },
  { id: 'W1-plugin-unprepared', app: 'plugin-unprepared', workload: 'W1', label: 'plugin, route queries unprepared', method: 'GET', path: '/w1' },
  { id: 'W1-plugin-signed', app: 'plugin-signed', workload: 'W1', label: 'plugin, signed context', method: 'GET', path: '/w1' },
  { id: 'W1-plugin-generic', app: 'plugin-generic', workload: 'W1', label: 'plugin, generic plans', method: 'GET', path: '/w1' },
  { id: 'W1-plugin-signed-generic', app: 'plugin-signed-generic', workload: 'W1', label: 'plugin, signed context, generic plans', method: 'GET', path: '/w1' },
  { id: 'W1-plugin-elevated', app: 'plugin-elevated', workload: 'W1', label: 'plugin, elevated access unused', method: 'GET', path: '/w1' },
  { id: 'W1-b1', app: 'b1', workload: 'W1', label: 'B1 raw pg', method: 'GET', path: '/w1' },
  { id: 'W1-b2', app: 'b2', workload: 'W1', label: 'B2 drizzle', method: 'GET', path: '/w1' },
  { id: 'W1-b2-prepared', app: 'b2', workload: 'W1', label: 'B2 drizzle, prepared', method: 'GET', path: '/w1p' },
  { id: 'W1-b3', app: 'b3', workload: 'W1', label: 'B3 @fastify/postgres', method: 'GET', path: '/w1' },
  { id: 'W1-b4', app: 'b4', workload: 'W1', label: 'B4 postgres.js, auto-prepared', method: 'GET', path: '/w1' },
  { id: 'W2-plugin', app: 'plugin', workload: 'W2', label: 'plugin', method: 'POST', path: '/w2' },
  { id: 'W2-plugin-signed', app: 'plugin-signed', workload: 'W2', label: 'plugin, signed context', method: 'POST', path: '/w2' },
  { id: 'W2-plugin-elevated', app: 'plugin-elevated', workload: 'W2', label: 'plugin, elevated access unused', method: 'POST', path: '/w2' },
  { id: 'W2-b2', app: 'b2', workload: 'W2', label: 'B2 drizzle', method: 'POST', path: '/w2' },
  { id: 'W2-b3', app: 'b3', workload: 'W2', label: 'B3 @fastify/postgres', method: 'POST', path: '/w2' },
  { id: 'W2-b4', app: 'b4', workload: 'W2', label: 'B4 postgres.js, auto-prepared', method: 'POST', path: '/w2' },
  { id: 'W3-plugin', app: 'plugin', workload: 'W3', label: 'plugin', method: 'GET', path: '/w3' },
  { id: 'W3-b0', app: 'b0', workload: 'W3', label: 'B0 plain Fastify', method: 'GET', path: '/w3' },
  { id: 'W4-plugin', app: 'plugin', workload: 'W4', label: 'plugin', method: 'GET', path: '/w4' },
  { id: 'W4-plugin-signed', app: 'plugin-signed', workload: 'W4', label: 'plugin, signed context', method: 'GET', path: '/w4' },
  { id: 'W4-plugin-generic', app: 'plugin-generic', workload: 'W4', label: 'plugin, generic plans', method: 'GET', path: '/w4' },
  { id: 'W4-b2', app: 'b2', workload: 'W4', label: 'B2 drizzle', method: 'GET', path: '/w4' },
  { id: 'W4-b3', app: 'b3', workload: 'W4', label: 'B3 @fastify/postgres', method: 'GET', path: '/w4' },
  { id: 'W4-b4', app: 'b4', workload: 'W4', label: 'B4 postgres.js, auto-prepared', method: 'GET', path: '/w4' }
]

/**
 * The targets a run loads: those named in `ids` (BENCH_TARGETS, comma-separated target ids), in
 * TARGETS order; every target when `ids` is unset or empty. An unknown id throws, so a typo never
 * yields a quick run that measured nothing.
 */
export function selectTargets (ids: string | undefined): readonly Target[] {
  const wanted = (ids ?? '').split(',').map((id) => id.trim()).filter((id) => id !== '')
  if (wanted.length === 0) return TARGETS
  const unknown = wanted.filter((id) => !TARGETS.some((target) => target.id === id))
  if (unknown.length > 0) throw new Error(`BENCH_TARGETS: unknown target ${unknown.join(', ')}; the targets are ${TARGETS.map((target) => target.id).join(', ')}`)
  return TARGETS.filter((target) => wanted.includes(target.id))
}

/** Plugin target vs baseline target, with the threshold where it sets one (min or max). */
export interface Comparison {
  subject: string
  baseline: string
  /** 'CPU per request at c=1': the app process's and PostgreSQL's CPU time together (see postgres-cpu.ts). */
  metric: 'throughput' | 'p50 at c=1' | 'CPU per request at c=1'
  /** Throughput must be at least this multiple; latency and CPU time at most this multiple. */
  target?: number
}

// Thresholds from issue 10's targets; the p50 ones from before it still stand.
export const COMPARISONS: readonly Comparison[] = [
  { subject: 'W1-plugin', baseline: 'W1-b2', metric: 'throughput', target: 1.0 },
  { subject: 'W1-plugin', baseline: 'W1-b2-prepared', metric: 'throughput', target: 0.85 },
  { subject: 'W1-plugin', baseline: 'W1-b3', metric: 'throughput', target: 1.3 },
  { subject: 'W1-plugin', baseline: 'W1-b1', metric: 'throughput' },
  { subject: 'W1-plugin', baseline: 'W1-b4', metric: 'throughput' },
  { subject: 'W1-plugin-prepared', baseline: 'W1-b2-prepared', metric: 'throughput' },
  { subject: 'W1-plugin-single', baseline: 'W1-b2-prepared', metric: 'throughput', target: 1.0 },
  { subject: 'W1-plugin-single', baseline: 'W1-b2', metric: 'p50 at c=1', target: 1.0 },
  { subject: 'W1-plugin', baseline: 'W1-plugin-unprepared', metric: 'throughput' },
  { subject: 'W1-plugin-signed', baseline: 'W1-plugin', metric: 'throughput' },
  { subject: 'W2-plugin-signed', baseline: 'W2-plugin', metric: 'throughput' },
  { subject: 'W4-plugin-signed', baseline: 'W4-plugin', metric: 'throughput' },
  // Issue 11's "a few percent" is finer than throughput on 2 shared cores can resolve; CPU time per request at c=1 is not.
  { subject: 'W1-plugin-signed', baseline: 'W1-plugin', metric: 'CPU per request at c=1' },
  { subject: 'W2-plugin-signed', baseline: 'W2-plugin', metric: 'CPU per request at c=1' },
  { subject: 'W4-plugin-signed', baseline: 'W4-plugin', metric: 'CPU per request at c=1' },
  { subject: 'W1-plugin-generic', baseline: 'W1-plugin', metric: 'throughput' },
  { subject: 'W1-plugin-generic', baseline: 'W1-plugin', metric: 'CPU per request at c=1' },
  { subject: 'W1-plugin-signed-generic', baseline: 'W1-plugin-generic', metric: 'throughput' },
  { subject: 'W1-plugin-signed-generic', baseline: 'W1-plugin-generic', metric: 'CPU per request at c=1' },
  { subject: 'W4-plugin-generic', baseline: 'W4-plugin', metric: 'throughput' },
  { subject: 'W4-plugin-generic', baseline: 'W4-plugin', metric: 'CPU per request at c=1' },
  { subject: 'W1-plugin-elevated', baseline: 'W1-plugin', metric: 'throughput' },
  { subject: 'W1-plugin-elevated', baseline: 'W1-plugin', metric: 'p50 at c=1' },
  { subject: 'W1-plugin-elevated', baseline: 'W1-plugin', metric: 'CPU per request at c=1' },
  { subject: 'W2-plugin-elevated', baseline: 'W2-plugin', metric: 'throughput' },
  { subject: 'W1-plugin', baseline: 'W1-b2', metric: 'p50 at c=1', target: 1.2 },
  { subject: 'W1-plugin', baseline: 'W1-b2', metric: 'CPU per request at c=1' },
  { subject: 'W1-plugin-prepared', baseline: 'W1-b2-prepared', metric: 'p50 at c=1', target: 1.2 },
  { subject: 'W2-plugin', baseline: 'W2-b2', metric: 'throughput', target: 0.9 },
  { subject: 'W2-plugin', baseline: 'W2-b3', metric: 'throughput' },
  { subject: 'W2-plugin', baseline: 'W2-b4', metric: 'throughput' },
  { subject: 'W3-plugin', baseline: 'W3-b0', metric: 'throughput', target: 0.97 },
  { subject: 'W4-plugin', baseline: 'W4-b2', metric: 'throughput' },
  { subject: 'W4-plugin', baseline: 'W4-b3', metric: 'throughput', target: 1.1 },
  { subject: 'W4-plugin', baseline: 'W4-b4', metric: 'throughput' }
]

/** SQL level: the RLS query's planning + execution at most this multiple of the manual WHERE's, both prepared. */
export const SQL_PREPARED_TARGET = 1.02
