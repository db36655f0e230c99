// GET /metrics in Prometheus's text format (prom-client), fed by the plugin's diagnostics_channel
// events plus one onResponse hook for the request count. Nothing here touches the database.
//
// Label cardinality is bounded: each tenant label costs one series per metric, and tenants are
// unbounded (every signed token can name a new one). So only counters carry a tenant label, and
// only for the first `maxTenantLabels` tenants this process sees; every later tenant counts under
// tenant="other", requests without a tenant under tenant="none". Histograms (pool wait, hold time,
// query duration) carry no tenant label at all: a histogram is a dozen series per label value.
// Why first-seen and not "top N by traffic": a counter that moved from tenant="other" to its own
// label when the tenant grew would make both series jump, and rate() over them would lie.
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { FastifyInstance } from 'fastify'
import { DIAGNOSTICS_CHANNELS } from 'fastify-tenant-rls'
import type { TransactionFinishEvent, TransactionOpenEvent, TransactionQueryEvent } from 'fastify-tenant-rls'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'

/** Options of `registerMetrics`. */
export interface MetricsOptions {
  /** How many tenants get a label of their own; later ones count as tenant="other". Default 20. */
  maxTenantLabels?: number
}

export const OTHER_TENANTS = 'other'
export const NO_TENANT = 'none'

/** Maps a tenant to its label value: itself for the first `max` tenants seen, 'other' after that. */
export function tenantLabeller (max: number): (tenantId: string | null) => string {
  const labelled = new Set<string>()
  return function tenantLabel (tenantId) {
    if (tenantId === null) return NO_TENANT
    if (labelled.has(tenantId)) return tenantId
    if (labelled.size >= max) return OTHER_TENANTS
    labelled.add(tenantId)
    return tenantId
  }
}

// Seconds, from 0.5 ms: a pool wait is usually well under a millisecond, until the pool runs dry.
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/** Adds GET /metrics (no token: keep it on an internal network or behind your proxy's auth). */
export function registerMetrics (app: FastifyInstance, { maxTenantLabels = 20 }: MetricsOptions = {}): void {
  const registry = new Registry()
  const tenantLabel = tenantLabeller(maxTenantLabels)
  const registers = [registry]
  const requests = new Counter({ name: 'tenant_rls_requests_total', help: 'HTTP requests by tenant and status class', labelNames: ['tenant', 'status_class'], registers })
  const transactions = new Counter({ name: 'tenant_rls_transactions_total', help: 'Tenant transactions that took a connection, by tenant and outcome', labelNames: ['tenant', 'outcome'], registers })
  const rollbacks = new Counter({ name: 'tenant_rls_rollbacks_total', help: 'Rolled-back tenant transactions by reason', labelNames: ['reason'], registers })
  const poolWaitTotal = new Counter({ name: 'tenant_rls_pool_wait_seconds_total', help: 'Seconds spent waiting for a pooled connection, by tenant', labelNames: ['tenant'], registers })
  const poolWait = new Histogram({ name: 'tenant_rls_pool_wait_seconds', help: 'Wait for a pooled connection; acquired="false" answered 503', labelNames: ['acquired'], buckets: BUCKETS, registers })
  const hold = new Histogram({ name: 'tenant_rls_transaction_hold_seconds', help: 'How long a tenant transaction held its connection', labelNames: ['outcome'], buckets: BUCKETS, registers })
  const queries = new Histogram({ name: 'tenant_rls_query_duration_seconds', help: 'Route queries by command tag (failed: the query raised an error)', labelNames: ['command'], buckets: BUCKETS, registers })
  const waiting = new Gauge({ name: 'tenant_rls_pool_waiting', help: 'Requests waiting for a connection when the last one was handed out', registers })

  function countOpen (message: unknown): void {
    const event = message as TransactionOpenEvent
    poolWait.observe({ acquired: String(event.acquired) }, event.poolWaitMs / 1000)
    poolWaitTotal.inc({ tenant: tenantLabel(event.tenantId) }, event.poolWaitMs / 1000)
    waiting.set(event.pool.waiting)
  }
  function countQuery (message: unknown): void {
    const event = message as TransactionQueryEvent
    queries.observe({ command: event.command ?? 'failed' }, event.durationMs / 1000)
  }
  function countFinish (message: unknown): void {
    const event = message as TransactionFinishEvent
    transactions.inc({ tenant: tenantLabel(event.tenantId), outcome: event.outcome })
    if (event.reason !== undefined) rollbacks.inc({ reason: event.reason })
    if (event.holdMs !== undefined) hold.observe({ outcome: event.outcome }, event.holdMs / 1000)
  }
  const listeners = [[DIAGNOSTICS_CHANNELS.open, countOpen], [DIAGNOSTICS_CHANNELS.query, countQuery], [DIAGNOSTICS_CHANNELS.finish, countFinish]] as const
  for (const [name, listener] of listeners) subscribe(name, listener)
  // Channels are process-wide: an app closed in a long-lived process (tests) stops counting.
  app.addHook('onClose', async function stopCounting () {
    for (const [name, listener] of listeners) unsubscribe(name, listener)
  })

  app.addHook('onResponse', async function countRequest (request, reply) {
    requests.inc({ tenant: tenantLabel(request.tenantId), status_class: `${Math.floor(reply.statusCode / 100)}xx` })
  })

  app.get('/metrics', { config: { tenant: false } }, async function metrics (_request, reply) {
    reply.type(registry.contentType)
    return registry.metrics()
  })
}
