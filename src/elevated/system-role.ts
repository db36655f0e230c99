// What is verified about the system pool's role before a cross-tenant job runs on it. The system
// role is the one way around RLS, so it must be narrow: it sees every tenant through BYPASSRLS
// (the one way supported: a policy granting it every row would have to be added to every tenant
// table by every migration, and a table that missed it would give a job half the data without a
// word), and nothing more. Not a superuser; not the application role, and no membership between
// the two either way (the app role, which runs tenant route code, could otherwise SET ROLE to it);
// no DELETE or TRUNCATE on an RLS table (batch jobs never delete; TRUNCATE ignores RLS and
// triggers that log); no table of its own (an owner can drop, disable triggers, rewrite policies);
// no CREATE in any schema (what it creates, every role it calls may run). Same split as
// safety-checks.ts: one query for the facts, plain TypeScript for the verdicts, each with its fix.
import type { Pool } from 'pg'
import { UnsafeSystemRoleError } from '../errors.js'
import { describeRoleProblem } from '../safety-checks.js'
import type { RoleProblem } from '../safety-checks.js'
import { quoteIdentifier } from '../sql-identifier.js'

interface SystemRoleFacts {
  role: string
  rolsuper: boolean
  rolbypassrls: boolean
  /** Roles that are members of the system role (they can SET ROLE to it). */
  members: string[]
  /** Roles the system role is a member of, predefined pg_* roles aside. */
  memberships: string[]
  /** RLS tables it (or a role it can become) may DELETE from or TRUNCATE. */
  deletable: string[]
  owned: string[]
  schemas: string[]
  /** The app role's CREATEROLE, when the app role is known: before PostgreSQL 16 it could grant itself the system role. */
  appCreatesRoles: boolean | null
}

// members: roles that can SET ROLE to the system role or inherit its privileges. From PostgreSQL 16
// a non-superuser CREATEROLE role that creates a role keeps an ADMIN-only membership of it (no SET,
// no INHERIT): the database administrator of a managed service. That one is allowed, unless it is
// the app role; the set_option and inherit_option columns are read through to_jsonb, as they do
// not exist before 16 (where every membership allows SET ROLE).
// reach: the system role and every role it can act as. Predefined pg_* roles are allowed as
// memberships (pg_read_all_data is a fine way to read), but what they carry still counts:
// pg_write_all_data brings DELETE on every table, and is refused through `deletable`.
const SYSTEM_ROLE_FACTS_SQL = `
WITH me AS (SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user),
reach AS (SELECT m.oid FROM pg_catalog.pg_roles m, me WHERE pg_catalog.pg_has_role(me.oid, m.oid, 'MEMBER'))
SELECT me.rolname::text AS role, me.rolsuper, me.rolbypassrls,
  ARRAY(SELECT pg_catalog.pg_get_userbyid(a.member)::text FROM pg_catalog.pg_auth_members a
        WHERE a.roleid = me.oid AND (pg_catalog.pg_get_userbyid(a.member) = $1
          OR coalesce((pg_catalog.to_jsonb(a) ->> 'set_option')::boolean, true) OR coalesce((pg_catalog.to_jsonb(a) ->> 'inherit_option')::boolean, true))
        ORDER BY 1) AS members,
  ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_auth_members a JOIN pg_catalog.pg_roles g ON g.oid = a.roleid
        WHERE a.member = me.oid AND g.rolname NOT LIKE 'pg\\_%' ORDER BY 1) AS memberships,
  ARRAY(SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c
        WHERE c.relrowsecurity AND c.relkind IN ('r', 'p')
          AND EXISTS (SELECT FROM reach WHERE pg_catalog.has_table_privilege(reach.oid, c.oid, 'DELETE') OR pg_catalog.has_table_privilege(reach.oid, c.oid, 'TRUNCATE'))
        ORDER BY 1) AS deletable,
  ARRAY(SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c
        WHERE c.relowner IN (SELECT oid FROM reach) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1) AS owned,
  ARRAY(SELECT n.nspname::text FROM pg_catalog.pg_namespace n
        WHERE n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast%'
          AND EXISTS (SELECT FROM reach WHERE pg_catalog.has_schema_privilege(reach.oid, n.oid, 'CREATE'))
        ORDER BY 1) AS schemas,
  (SELECT a.rolcreaterole AND NOT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.rolname = $1) AS "appCreatesRoles"
FROM me`

/** The verdicts on the facts; `appRole` is the application pool's role when known (the plugin knows it). */
function systemRoleProblems (facts: SystemRoleFacts, appRole: string | undefined): RoleProblem[] {
  const { role, rolsuper, rolbypassrls, members, memberships, deletable, owned, schemas, appCreatesRoles } = facts
  const name = quoteIdentifier(role)
  // A superuser can do everything below and more; listing each would bury the one fix.
  if (rolsuper) return [{ role, problem: 'is a superuser: a job could drop tables, disable the audit trail\'s triggers or read the server\'s files', fix: `connect the system pool as a dedicated role: ALTER ROLE ${name} NOSUPERUSER (systemRoleSql writes the rest)` }]
  const problems: RoleProblem[] = []
  if (appRole === role) problems.push({ role, problem: 'is the application pool\'s role: tenant route code would run with the system role\'s reach', fix: 'create a separate role for the system pool (systemRoleSql) and connect the system pool as it' })
  if (!rolbypassrls) problems.push({ role, problem: 'cannot see all tenants: it has no BYPASSRLS, so RLS policies hide every tenant\'s rows from it', fix: `as a superuser: ALTER ROLE ${name} BYPASSRLS` })
  if (members.length > 0) problems.push({ role, problem: `can be taken on by ${members.map(quoteIdentifier).join(', ')} (members can SET ROLE to it)${appRole !== undefined && members.includes(appRole) ? ', the application role among them' : ''}`, fix: `REVOKE ${name} FROM ${members.map(quoteIdentifier).join(', ')}` })
  if (memberships.length > 0) problems.push({ role, problem: `is a member of ${memberships.map(quoteIdentifier).join(', ')}, whose privileges it carries${appRole !== undefined && memberships.includes(appRole) ? ' (the application role among them)' : ''}`, fix: `REVOKE ${memberships.map(quoteIdentifier).join(', ')} FROM ${name}` })
  if (appCreatesRoles === true) problems.push({ role, problem: `can be granted to the application role "${String(appRole)}" by itself: the application role has CREATEROLE`, fix: `ALTER ROLE ${quoteIdentifier(String(appRole))} NOCREATEROLE` })
  if (deletable.length > 0) problems.push({ role, problem: `may DELETE from or TRUNCATE the RLS table(s) ${deletable.join(', ')} (directly, through PUBLIC or a role it is a member of): system jobs never delete`, fix: `REVOKE DELETE, TRUNCATE ON ${deletable.join(', ')} FROM ${name}, PUBLIC (or REVOKE the role that carries them, e.g. pg_write_all_data)` })
  if (owned.length > 0) problems.push({ role, problem: `owns ${owned.join(', ')}: an owner can drop them, disable their triggers and rewrite their policies`, fix: `ALTER TABLE … OWNER TO the migration role, for each of ${owned.join(', ')}` })
  if (schemas.length > 0) problems.push({ role, problem: `may create objects in schema(s) ${schemas.map(quoteIdentifier).join(', ')}`, fix: `as the schema owner: REVOKE CREATE ON SCHEMA ${schemas.map(quoteIdentifier).join(', ')} FROM ${name}, PUBLIC` })
  return problems
}

/** The system pool's role and what makes it unsafe for cross-tenant jobs. */
export interface SystemRoleInspection {
  role: string
  problems: RoleProblem[]
}

/**
 * Inspects the role the system pool's connections run as. `appRole`, the application pool's role,
 * adds the checks that need it (same role, CREATEROLE); membership is refused either way without it.
 */
export async function inspectSystemRole (systemPool: Pool, appRole?: string): Promise<SystemRoleInspection> {
  const { rows: [facts] } = await systemPool.query<SystemRoleFacts>(SYSTEM_ROLE_FACTS_SQL, [appRole ?? null])
  if (facts === undefined) return { role: 'undefined', problems: [{ role: 'undefined', problem: 'is not a role of this server', fix: 'connect the system pool as an existing role' }] }
  return { role: facts.role, problems: systemRoleProblems(facts, appRole) }
}

/** Refuses (FST_TENANT_RLS_UNSAFE_SYSTEM_ROLE, with every fix) an unsafe system pool; returns its role otherwise. */
export async function checkSystemRole (systemPool: Pool, appRole?: string): Promise<string> {
  const { role, problems } = await inspectSystemRole(systemPool, appRole)
  if (problems.length > 0) throw new UnsafeSystemRoleError(problems.map(describeRoleProblem).join('; '))
  return role
}

// One check per pool, shared by every withSystem call on it; a failed check is not kept, so a role
// fixed in the database is accepted on the next call.
const checkedRoles = new WeakMap<Pool, Promise<string>>()

/** The checked role of `systemPool`, checking it on first use. */
export function checkedSystemRole (systemPool: Pool): Promise<string> {
  let role = checkedRoles.get(systemPool)
  if (role === undefined) {
    role = checkSystemRole(systemPool)
    checkedRoles.set(systemPool, role)
    role.catch(() => { checkedRoles.delete(systemPool) })
  }
  return role
}

/** Records a role checked elsewhere (the plugin at ready, with the app role known) for later calls. */
export function rememberSystemRole (systemPool: Pool, role: string): void {
  checkedRoles.set(systemPool, Promise.resolve(role))
}
