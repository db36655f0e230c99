// Turns a verified request into exactly one canonical tenant id (of the configured type), or a 403. There is no fallback
// tenant: anything that does not yield a valid id fails the request.
import type {} from '@fastify/jwt'
import type { FastifyRequest } from 'fastify'
import { TenantInvalidError, TenantMissingError, TenantResolutionError } from './errors.js'
import type { ResolvedOptions } from './options.js'
import { normalizeTenantId } from './tenant-id.js'

/** Reads a claim by path using own properties only, so `__proto__` or `constructor` read nothing. */
function readClaim (claims: unknown, path: readonly string[]): unknown {
  let value = claims
  for (const segment of path) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, segment)) return undefined
    value = (value as Record<string, unknown>)[segment]
  }
  return value
}

async function candidateTenant (request: FastifyRequest, options: ResolvedOptions): Promise<unknown> {
  if (options.resolveTenant === undefined) return readClaim(request.user, options.claimPath)
  try {
    return await options.resolveTenant(request)
  } catch (error) {
    request.log.warn({ err: error }, 'resolveTenant threw; refusing the request')
    throw new TenantResolutionError({ cause: error })
  }
}

/** Resolves and validates the tenant of a request whose JWT has been verified. */
export async function resolveTenantId (request: FastifyRequest, options: ResolvedOptions): Promise<string> {
  const candidate = await candidateTenant(request, options)
  if (candidate === undefined || candidate === null || candidate === '') throw new TenantMissingError()
  const tenantId = normalizeTenantId(candidate, options.tenantIdType)
  if (tenantId === null) throw new TenantInvalidError()
  return tenantId
}
