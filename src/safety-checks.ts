// What the plugin verifies about the live database before it serves a request: that the pool's
// role is one RLS applies to. A superuser or a BYPASSRLS role skips every policy silently, so the
// plugin refuses to start rather than run with isolation switched off.
import type { Pool } from 'pg'

/** One reason the role is unsafe, with the fix. */
export interface RoleProblem {
  role: string
  problem: string
  fix: string
}

/** Inspects the role the pool logs in as and returns what makes it unsafe (empty when safe). */
export async function inspectPoolRole (pool: Pool): Promise<RoleProblem[]> {
  const { rows } = await pool.query<{ role: string, rolsuper: boolean, rolbypassrls: boolean }>(
    'SELECT r.rolname AS role, r.rolsuper, r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user'
  )
  const problems: RoleProblem[] = []
  for (const { role, rolsuper, rolbypassrls } of rows) {
    if (rolsuper) problems.push({ role, problem: 'is a superuser, so RLS policies do not apply to it', fix: `connect as a role created with NOSUPERUSER (ALTER ROLE "${role}" NOSUPERUSER)` })
    if (rolbypassrls) problems.push({ role, problem: 'has BYPASSRLS, so RLS policies do not apply to it', fix: `ALTER ROLE "${role}" NOBYPASSRLS` })
  }
  return problems
}
