// The two ways the driver loads one target: autocannon at a fixed concurrency for a fixed time
// (throughput and latency under load), and a sequential keep-alive client timing each request with
// hrtime (latency at c=1, without autocannon's own overhead). Each request carries the token of a
// tenant picked at random. A run with any failed request throws: broken targets never score.
import { Agent, request as httpRequest } from 'node:http'
import autocannon from 'autocannon'
import type { Target } from './targets.js'

export interface LoadFigures {
  requestsPerSecond: number
  p50: number
  p99: number
  requests: number
}

export interface Load {
  port: number
  target: Target
  /** Bearer tokens, one per tenant; each request picks one at random. */
  tokens: readonly string[]
}

const BODY = JSON.stringify({ amount: 7 })

function headersFor (load: Load): Record<string, string> {
  const token = load.tokens[Math.floor(Math.random() * load.tokens.length)] ?? ''
  const headers: Record<string, string> = { authorization: `Bearer ${token}` }
  if (load.target.method === 'POST') headers['content-type'] = 'application/json'
  return headers
}

/** autocannon with `connections` concurrent keep-alive connections for `seconds`. */
export async function underLoad (load: Load, connections: number, seconds: number): Promise<LoadFigures> {
  const { method, path } = load.target
  const result = await autocannon({
    url: `http://127.0.0.1:${load.port}`,
    connections,
    duration: seconds,
    requests: [{
      method,
      path,
      ...(method === 'POST' ? { body: BODY } : {}),
      setupRequest: (request) => ({ ...request, headers: headersFor(load) })
    }]
  })
  if (result.errors > 0 || result.timeouts > 0 || result.non2xx > 0) {
    throw new Error(`${load.target.id}: ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx replies under load`)
  }
  return { requestsPerSecond: result['2xx'] / result.duration, p50: result.latency.p50, p99: result.latency.p99, requests: result['2xx'] }
}

function once (load: Load, agent: Agent): Promise<void> {
  return new Promise((resolve, reject) => {
    const { method, path } = load.target
    const outgoing = httpRequest({ host: '127.0.0.1', port: load.port, method, path, agent, headers: headersFor(load) }, (incoming) => {
      incoming.resume()
      incoming.on('end', () => {
        if (incoming.statusCode === 200) resolve()
        else reject(new Error(`${load.target.id}: status ${String(incoming.statusCode)}`))
      })
    })
    outgoing.on('error', reject)
    outgoing.end(method === 'POST' ? BODY : undefined)
  })
}

function percentile (sorted: readonly number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? Number.NaN
}

/** `count` requests one after another on one keep-alive connection, each timed with hrtime. */
export async function sequential (load: Load, count: number): Promise<LoadFigures> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const timings: number[] = []
  const started = process.hrtime.bigint()
  try {
    for (let i = 0; i < count; i++) {
      const before = process.hrtime.bigint()
      await once(load, agent)
      timings.push(Number(process.hrtime.bigint() - before) / 1e6)
    }
  } finally {
    agent.destroy()
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  timings.sort((a, b) => a - b)
  return { requestsPerSecond: count / seconds, p50: percentile(timings, 0.5), p99: percentile(timings, 0.99), requests: count }
}
