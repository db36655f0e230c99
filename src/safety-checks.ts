// What the plugin verifies about the live database before it serves a request: that the pool's
// role is one RLS applies to and cannot switch off. A superuser or a BYPASSRLS role skips every
// policy silently; a role that can SET ROLE to one is a statement away from it; the owner of a
// table can disable its RLS or rewrite its policies. The plugin refuses to start rather than run
// with isolation switched off, or one statement away from it.
import type { Pool } from 'pg'
import { UnsafeRoleError } from './errors.js'

/** One reason the role is unsafe, with the fix. */
export interface RoleProblem {
  role: string
  problem: string
  fix: string
}

interface RoleFacts {
  role: string
  rolsuper: boolean
  rolbypassrls: boolean
  privileged: string[]
  owned: string[]
}

const ROLE_FACTS_SQL = `
SELECT r.rolname AS role, r.rolsuper, r.rolbypassrls,
  ARRAY(SELECT m.rolname::text FROM pg_catalog.pg_roles m
        WHERE m.oid <> r.oid AND (m.rolsuper OR m.rolbypassrls) AND pg_catalog.pg_has_role(r.oid, m.oid, 'MEMBER')
        ORDER BY 1) AS privileged,
  ARRAY(SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
        WHERE c.relowner = r.oid AND c.relrowsecurity
        ORDER BY 1) AS owned
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`

/** The role a pool's connections run as, and what makes it unsafe (empty when safe). */
export interface RoleInspection {
  role: string
  problems: RoleProblem[]
}

/** Inspects the role the pool's connections run as. */
export async function inspectPoolRole (pool: Pool): Promise<RoleInspection> {
  const { rows } = await pool.query<RoleFacts>(ROLE_FACTS_SQL)
  const problems: RoleProblem[] = []
  for (const { role, rolsuper, rolbypassrls, privileged, owned } of rows) {
    if (rolsuper) problems.push({ role, problem: 'is a superuser, so RLS policies do not apply to it', fix: `connect as a role created with NOSUPERUSER (ALTER ROLE "${role}" NOSUPERUSER)` })
    if (rolbypassrls) problems.push({ role, problem: 'has BYPASSRLS, so RLS policies do not apply to it', fix: `ALTER ROLE "${role}" NOBYPASSRLS` })
    if (privileged.length > 0) problems.push({ role, problem: `is a member of ${privileged.join(', ')}, which bypass RLS (SET ROLE would switch it off)`, fix: `REVOKE ${privileged.join(', ')} FROM "${role}"` })
    if (owned.length > 0) problems.push({ role, problem: `owns the RLS table(s) ${owned.join(', ')}, so it could disable their policies`, fix: 'let a separate owner (migration) role own the tables and GRANT the app role SELECT, INSERT, UPDATE, DELETE' })
  }
  return { role: String(rows[0]?.role), problems }
}

/** Refuses (UnsafeRoleError, with the fixes) a pool whose role is unsafe; returns the role otherwise. */
export async function checkPoolRole (pool: Pool): Promise<string> {
  const { role, problems } = await inspectPoolRole(pool)
  if (problems.length > 0) {
    throw new UnsafeRoleError(problems.map(({ role, problem, fix }) => `role "${role}" ${problem}; fix: ${fix}`).join('; '))
  }
  return role
}
