// The tenant context EXPLAIN under a tenant (explain.ts) runs in, and whether its plan saw the
// tenant at all. In signed mode the tenant is set with its signature, and the verifying function
// must hand it back before the statement runs; without the signature, a plan over tables whose
// policies call that function is the plan of a statement that would see none of the tenant's rows, and is
// refused rather than shown.
import type { ClientBase } from 'pg'
import { SignedContextRejectedError, SignedContextRequiredError, SignedContextUnavailableError } from '../errors.js'
import { backendPidOf } from '../signed-context/backend-pid.js'
import { verifiedTenantOf } from '../signed-context/inspection.js'
import { setLocalTenantContext } from '../signed-context/local-context.js'
import type { ResolvedSignedContext } from '../signed-context/options.js'
import { CURRENT_TENANT_FUNCTION } from '../signed-context/schema-sql.js'

// Why the verifying function is asked here, in the explain's own transaction, rather than through
// checkSignedContext: that check inspects the role a pool connects as, and explain often connects as
// another role that switches to the app role (SET LOCAL ROLE), whose catalog facts (it owns the
// verifier, it may read the keys) would refuse a database that is fine. Asked here, as the app role,
// on this backend, with this signature, the answer is exactly the one the statement will get.
/**
 * Sets the tenant (and in signed mode its signature) for the current transaction of `client`; in
 * signed mode throws FST_TENANT_RLS_SIGNED_CONTEXT_REJECTED unless the database verifies it, and
 * FST_TENANT_RLS_SIGNED_CONTEXT_UNAVAILABLE when the connection knows no backend pid to sign for.
 */
export async function openExplainContext (client: ClientBase, setting: string, tenant: string, signed: ResolvedSignedContext | undefined): Promise<void> {
  if (signed !== undefined && backendPidOf(client) === undefined) throw new SignedContextUnavailableError()
  await setLocalTenantContext(client, setting, tenant, signed)
  if (signed === undefined) return
  let verified: string | null | undefined
  try {
    verified = await verifiedTenantOf(client)
  } catch (error) {
    throw new SignedContextRejectedError(`${CURRENT_TENANT_FUNCTION} failed (${(error as Error).message}); install it with signedContextSql (fastify-tenant-rls/schema), and grant the app role EXECUTE on it`, { cause: error })
  }
  if (verified !== tenant) {
    const { id } = signed.signingKey
    throw new SignedContextRejectedError(`${CURRENT_TENANT_FUNCTION} did not accept the signature made with the key "${id}": the key is not installed (installSigningKey) or was removed, a pooler sits between this connection and PostgreSQL, or the clocks are further apart than the ttl; inspectSignedContext on the app role's pool says which`)
  }
}

/** What the plan's facts query says about one relation the plan reads. */
export interface PlanRelation {
  /** `schema.table` */
  name: string
  /** A policy that applies to the app role calls the verifying function (on it, or on a partitioned table above it). */
  signed: boolean
}

// An error, not a finding: a finding would stand beside a plan whose row counts and shapes are
// those of a tenant with no rows, and its exit code (1, "a slow plan shape") would say the wrong
// thing; nothing of that plan is worth reading.
/** Throws FST_TENANT_RLS_SIGNED_CONTEXT_REQUIRED when an unsigned plan read a table with a signed policy. */
export function refuseUnsignedPlan (relations: readonly PlanRelation[], signed: ResolvedSignedContext | undefined): void {
  if (signed !== undefined) return
  const needing = relations.filter((relation) => relation.signed).map((relation) => relation.name)
  if (needing.length > 0) throw new SignedContextRequiredError(needing.join(', '))
}
