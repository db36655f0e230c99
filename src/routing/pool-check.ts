// The checks a pool the route option names must pass before its first transaction: the same role
// check as the pool checked at ready (no superuser, no BYPASSRLS, ...), and in signed mode the
// signed-context check, each kept per pool so a pool is checked once whichever tenant names it.
import type { Pool } from 'pg'
import type { ResolvedSignedContext } from '../signed-context/options.js'
import { checkedPoolRole, checkedSignedContext } from '../with-tenant.js'

/** The role `pool` runs as, once it passed the checks; rejects with the check's error otherwise. */
export async function checkedRoutedPool (pool: Pool, signedContext: ResolvedSignedContext | undefined, setting: string): Promise<string> {
  const role = await checkedPoolRole(pool)
  if (signedContext !== undefined) await checkedSignedContext(pool, signedContext, setting)
  return role
}
