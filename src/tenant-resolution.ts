// Turns a verified request into exactly one canonical tenant id (of the configured type), or a 403. There is no fallback
// tenant: anything that does not yield a valid id fails the request.
import type { FastifyRequest } from 'fastify'
import { TenantInvalidError, TenantMissingError, TenantResolutionError } from './errors.js'
import type { ResolvedOptions } from './options.js'
import { normalizeTenantId } from './tenant-id.js'

/** Reads a claim by path using own properties only, so `__proto__` or `constructor` read nothing. */
export function readClaim (claims: unknown, path: readonly string[]): unknown {
  let value = claims
  for (const segment of path) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, segment)) return undefined
    value = (value as Record<string, unknown>)[segment]
  }
  return value
}

// A resolver that throws an HTTP client error means it for the client (an unknown organisation is
// a 404, a revoked membership a 401), as with any Fastify error: its status and message are kept.
// Anything else (a bug, a directory service down, a 5xx, a status outside 4xx) fails closed as 403.
function isClientError (error: unknown): boolean {
  const statusCode = (error as { statusCode?: unknown } | null)?.statusCode
  return error instanceof Error && typeof statusCode === 'number' && Number.isInteger(statusCode) && statusCode >= 400 && statusCode < 500
}

async function candidateTenant (request: FastifyRequest, claims: unknown, options: ResolvedOptions): Promise<unknown> {
  if (options.resolveTenant === undefined) return readClaim(claims, options.claimPath)
  try {
    return await options.resolveTenant(request, claims)
  } catch (error) {
    if (isClientError(error)) throw error
    request.log.warn({ err: error }, 'resolveTenant threw; refusing the request')
    throw new TenantResolutionError({ cause: error })
  }
}

/** Resolves and validates the tenant of a request from its verified claims. */
export async function resolveTenantId (request: FastifyRequest, claims: unknown, options: ResolvedOptions): Promise<string> {
  const candidate = await candidateTenant(request, claims, options)
  if (candidate === undefined || candidate === null || candidate === '') throw new TenantMissingError()
  const tenantId = normalizeTenantId(candidate, options.tenantIdType)
  if (tenantId === null) throw new TenantInvalidError()
  return tenantId
}
