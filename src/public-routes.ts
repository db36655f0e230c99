// Which routes need no token: the `publicRoutes` option, checked at register time and turned into
// one predicate. The plugin asks it once per route (at onRoute, or on the first request of a route
// declared before the plugin), never per request. A public route gets no tenant and no
// transaction: request.db throws there, so declaring a route public can never widen what it reads.
import { failOption } from './errors.js'

/** What the `publicRoutes.match` predicate is shown of a route. */
export interface PublicRouteCandidate {
  /** The route's method, or its methods when it was declared with several. */
  method: string | readonly string[]
  /** The full URL pattern, prefixes included, e.g. `/documentation/static/*`. */
  url: string
}

/** Routes that answer without a token (documentation, health checks, metrics). */
export interface PublicRoutesOptions {
  /** URL prefixes, each matched on whole path segments: `/documentation` covers `/documentation/json`, not `/documentations`. */
  prefixes?: readonly string[]
  /** Called once per route at startup; `true` makes the route public. */
  match?: (route: PublicRouteCandidate) => boolean
}

export type PublicRoutePredicate = (route: PublicRouteCandidate) => boolean

function validatePrefix (prefix: unknown): string {
  if (typeof prefix !== 'string' || !prefix.startsWith('/') || /[*:?\s]/.test(prefix)) {
    failOption(`publicRoutes.prefixes must hold URL paths such as '/documentation' (no wildcards or parameters), got ${JSON.stringify(prefix)}`)
  }
  const base = prefix.replace(/\/+$/, '')
  // '/' would open every route: secure-by-default must stay the default.
  if (base === '') failOption("publicRoutes.prefixes cannot contain '/': it would make every route public; list the public prefixes, or set config: { tenant: false } on single routes")
  return base
}

/** A preflight answers before any route code and carries no credentials by design (the Fetch standard). */
function isOptionsOnly (method: string | readonly string[]): boolean {
  const methods = typeof method === 'string' ? [method] : method
  return methods.length > 0 && methods.every((name) => name === 'OPTIONS')
}

/** Checks the `publicRoutes` option and returns the predicate the plugin asks once per route. */
export function validatePublicRoutes (publicRoutes: unknown): PublicRoutePredicate {
  if (publicRoutes === undefined) return function isPublicRoute (route) { return isOptionsOnly(route.method) }
  if (publicRoutes === null || typeof publicRoutes !== 'object' || Array.isArray(publicRoutes)) {
    failOption("publicRoutes must be an object such as { prefixes: ['/documentation'] } or { match: (route) => boolean }")
  }
  const { prefixes = [], match, ...rest } = publicRoutes as Record<string, unknown>
  const unknown = Object.keys(rest)
  if (unknown.length > 0) failOption(`unknown publicRoutes option(s) ${unknown.join(', ')}; known are prefixes, match`)
  if (!Array.isArray(prefixes)) failOption(`publicRoutes.prefixes must be an array of URL paths such as ['/documentation'], got ${JSON.stringify(prefixes)}`)
  if (match !== undefined && typeof match !== 'function') failOption('publicRoutes.match must be a function (route) => boolean')
  const bases = prefixes.map(validatePrefix)
  const matches = match as PublicRoutePredicate | undefined
  return function isPublicRoute (route) {
    if (isOptionsOnly(route.method)) return true
    if (bases.some((base) => route.url === base || route.url.startsWith(`${base}/`))) return true
    if (matches === undefined) return false
    let verdict: unknown
    try {
      verdict = matches(route)
    } catch (error) {
      failOption(`publicRoutes.match threw for ${String(route.method)} ${route.url}: ${(error as Error).message}`)
    }
    // Only a literal true opens a route: a predicate returning a truthy object by mistake stays closed.
    return verdict === true
  }
}
