// Which database holds a tenant: the `route` option's answer for each tenant, cached (bounded in
// size and age, so a tenant moved elsewhere is found there again within the age), and the role
// check of every pool it names, done once per pool before the pool's first transaction: a pool
// first named after ready is held to the same checks as the pool checked at ready.
import type { Pool } from 'pg'
import { PlacementUnknownDatabaseError, TenantNotPlacedError, TenantRouteFailedError } from '../errors.js'
import { validatePool } from '../options.js'

/** Returns the pool of the application role on the database that holds `tenantId` (a canonical id). */
export type TenantRoute = (tenantId: string) => Pool | Promise<Pool>

/** A tenant's pool, and the role that pool was checked to run as. */
export interface Placement {
  pool: Pool
  role: string
}

/** How many tenants' placements are kept, and for how long: a bound on memory and on staleness. */
export const ROUTE_CACHE_SIZE = 10000
export const ROUTE_CACHE_MS = 30000

interface Cached {
  placement: Promise<Placement>
  at: number
}

/** The route option at work: one placement per tenant, asked once per cache period. */
export class TenantRouter {
  readonly #route: TenantRoute
  readonly #checkPool: (pool: Pool) => Promise<string>
  readonly #cacheMs: number
  // A Map keeps insertion order: re-inserting on each hit makes its first key the least recently used.
  readonly #cache = new Map<string, Cached>()

  /** `checkPool` resolves to the role `pool` runs as once it passed the startup checks, or rejects; `cacheMs` bounds a placement's age. */
  constructor (route: TenantRoute, checkPool: (pool: Pool) => Promise<string>, cacheMs = ROUTE_CACHE_MS) {
    this.#route = route
    this.#checkPool = checkPool
    this.#cacheMs = cacheMs
  }

  /** The placement of `tenantId`; concurrent first requests of a tenant share one call of the route. */
  placementOf (tenantId: string): Promise<Placement> {
    const now = Date.now()
    const cached = this.#cache.get(tenantId)
    if (cached !== undefined) {
      this.#cache.delete(tenantId)
      if (now - cached.at < this.#cacheMs) {
        this.#cache.set(tenantId, cached)
        return cached.placement
      }
    }
    const placement = this.#place(tenantId)
    this.#cache.set(tenantId, { placement, at: now })
    if (this.#cache.size > ROUTE_CACHE_SIZE) this.#cache.delete(this.#cache.keys().next().value as string)
    // A failure is not kept: the next request asks again (a placement store that was down, a role fixed).
    placement.catch(() => { if (this.#cache.get(tenantId)?.placement === placement) this.#cache.delete(tenantId) })
    return placement
  }

  /** Checks a pool the route will name, at ready; the check is kept per pool. */
  check (pool: Pool): Promise<string> {
    return this.#checkPool(validatePool(pool))
  }

  async #place (tenantId: string): Promise<Placement> {
    let pool: Pool
    try {
      pool = await this.#route(tenantId)
    } catch (error) {
      // The placement table's own verdicts (no placement, an unknown database) are answers, not outages.
      if (error instanceof TenantNotPlacedError || error instanceof PlacementUnknownDatabaseError) throw error
      // Fastify's default error handler copies `headers` onto the reply: a placement store that is
      // down is a moment's unavailability, not the client's fault.
      throw Object.assign(new TenantRouteFailedError({ cause: error }), { headers: { 'retry-after': '1' } })
    }
    // A wrong answer (not a pool, a pool that can hang) is refused with the option's own message.
    return { pool, role: await this.check(pool) }
  }
}
