// Opening a tenant context on a connection the caller drives itself (the testing kit's
// transactions): the tenant setting, and in signed mode the signature beside it, both
// transaction-local, in one statement with bound parameters, as the plugin's opening sets them.
// Inside BEGIN only: set_config(..., true) outside a transaction lasts for one statement.
import type { ClientBase } from 'pg'
import { backendPidOf } from './backend-pid.js'
import type { ResolvedSignedContext } from './options.js'
import { signTenantContext } from './signer.js'

/** Sets `tenant` in `setting` for the current transaction of `client`, signed when `signed` is given. */
export async function setLocalTenantContext (client: ClientBase, setting: string, tenant: string, signed?: ResolvedSignedContext): Promise<void> {
  if (signed === undefined) {
    await client.query('SELECT set_config($1, $2, true)', [setting, tenant])
    return
  }
  const backendPid = backendPidOf(client)
  // Without the pid nothing could verify: say so rather than open a context that sees no rows.
  if (backendPid === undefined) throw new Error('signed tenant context: the connection reports no backend pid (a pooler in between?), so no signature made for it can verify')
  const signature = signTenantContext({ key: signed.signingKey, tenantId: tenant, backendPid, expiresAt: Date.now() + signed.ttl })
  await client.query('SELECT set_config($1, $2, true), set_config($3, $4, true)', [setting, tenant, signature.name, signature.value])
}
