// The checks a pool the route option names must pass before its first transaction: the same role
// check as the pool checked at ready (no superuser, no BYPASSRLS, ...), in signed mode the
// signed-context check, and with tenantStatus the status read; kept per pool, so a pool is checked
// once whichever tenant names it (a failed check is not kept: the next use checks again).
import type { Pool } from 'pg'
import type { ResolvedSignedContext } from '../signed-context/options.js'
import type { TenantStatusCheck } from '../tenant-status/check.js'
import { checkedPool } from '../with-tenant.js'

/** What the plugin-wide options ask of every pool. */
export interface RoutedPoolChecks {
  signedContext: ResolvedSignedContext | undefined
  setting: string
  tenantStatus: TenantStatusCheck | undefined
}

/** Returns a checker: the role a pool runs as once it passed the checks, or the check's error. */
export function routedPoolChecker (checks: RoutedPoolChecks): (pool: Pool) => Promise<string> {
  const checked = new WeakMap<Pool, Promise<string>>()
  return function checkedRoutedPool (pool) {
    let role = checked.get(pool)
    if (role === undefined) {
      role = check(pool, checks)
      checked.set(pool, role)
      role.catch(() => { checked.delete(pool) })
    }
    return role
  }
}

async function check (pool: Pool, { signedContext, setting, tenantStatus }: RoutedPoolChecks): Promise<string> {
  const role = await checkedPool(pool, setting, signedContext)
  await tenantStatus?.verify(pool)
  return role
}
