// What the plugin verifies about the live database before it serves a request: that the pool's
// role is one RLS applies to and cannot switch off, and that the login role every tenant shares
// gives no tenant a way to reach another. A superuser or a BYPASSRLS role skips every policy
// silently; a role that can SET ROLE to one is a statement away from it; the owner of a table can
// disable its RLS or rewrite its policies; a setting stored for the role or its database changes
// every connection before the plugin sends anything; temporary tables and objects the role may
// create outlive a request. The plugin refuses to start rather than run with any of that. What only
// a superuser can take away (shared-role.ts) is a warning instead: managed PostgreSQL has none.
import type { Pool } from 'pg'
import { UnsafeRoleError } from './errors.js'
import { CHANNEL_EXTENSIONS, OWN_TRANSACTION_STATISTICS, SHARED_ROLE_CHANNELS } from './shared-role.js'

// The commit check counts this transaction's writes to the role's catalogs with these
// (tenant-transaction.ts, SHARED_CATALOG_WRITES); without them no tenant transaction can open.
const COMMIT_CHECK_FUNCTIONS = ['inserted', 'updated', 'deleted'].map((kind) => `pg_catalog.pg_stat_get_xact_tuples_${kind}(oid)`)
import { storedSettingVerdicts } from './stored-settings.js'
import type { StoredSetting } from './stored-settings.js'
import { quoteIdentifier } from './sql-identifier.js'

/** One reason the role is unsafe (or, as a warning, less isolated than it could be), with the fix. */
export interface RoleProblem {
  role: string
  problem: string
  fix: string
}

/**
 * Predefined roles that act across every backend or on the server's files: a member could end
 * other tenants' requests, read every backend's query text, or pass data through files.
 */
export const REFUSED_PREDEFINED_ROLES: readonly string[] = Object.freeze([
  'pg_signal_backend',
  'pg_read_all_stats',
  'pg_read_server_files',
  'pg_write_server_files',
  'pg_execute_server_program'
])

interface SchemaGrant {
  schema: string
  grantees: string[]
  /** The role is a member of the schema's owner, so it may create there whatever is revoked. */
  owned: boolean
}

interface ChannelObject {
  channel: string
  object: string
  ownerIsSuperuser: boolean
}

interface RoleFacts {
  role: string
  rolsuper: boolean
  rolbypassrls: boolean
  privileged: string[]
  owned: string[]
  predefined: string[]
  /** Functions the commit check calls that the role may not execute. */
  uncallable: string[]
  login: string
  database: string
  temporary: string[]
  create: string[]
  schemas: SchemaGrant[]
  settings: StoredSetting[]
  channels: ChannelObject[]
}

// Grantees are PUBLIC or the roles this role can act as (itself and every role it is a member of,
// including through SET ROLE): the grants a REVOKE has to name. A missing ACL is the default one.
const ROLE_FACTS_SQL = `
WITH me AS (SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user),
reach AS (SELECT m.oid FROM pg_catalog.pg_roles m, me WHERE pg_catalog.pg_has_role(me.oid, m.oid, 'MEMBER')),
db AS (SELECT d.oid, d.datname, coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba)) AS acl
       FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()),
db_grants AS (SELECT a.privilege_type, CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END AS grantee
              FROM db, pg_catalog.aclexplode(db.acl) a WHERE a.grantee = 0 OR a.grantee IN (SELECT oid FROM reach)),
objects AS (
  SELECT c.channel, p.oid::pg_catalog.regprocedure::text AS object, p.proowner AS owner, p.pronamespace AS namespace, p.oid, 'pg_catalog.pg_proc'::pg_catalog.regclass AS catalog,
         EXISTS (SELECT FROM reach WHERE pg_catalog.has_function_privilege(reach.oid, p.oid, 'EXECUTE')) AS usable
  FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) AS c (channel, pattern) JOIN pg_catalog.pg_proc p ON p.proname LIKE c.pattern AND NOT p.proname LIKE ANY ($7::text[])
  UNION ALL
  SELECT c.channel, v.oid::pg_catalog.regclass::text, v.relowner, v.relnamespace, v.oid, 'pg_catalog.pg_class'::pg_catalog.regclass,
         EXISTS (SELECT FROM reach WHERE pg_catalog.has_table_privilege(reach.oid, v.oid, 'SELECT'))
  FROM ROWS FROM (pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::text[])) AS c (channel, pattern) JOIN pg_catalog.pg_class v ON v.relname LIKE c.pattern AND NOT v.relname LIKE ANY ($8::text[]) AND v.relkind = 'v'
)
SELECT me.rolname AS role, me.rolsuper, me.rolbypassrls,
  ARRAY(SELECT m.rolname::text FROM pg_catalog.pg_roles m
        WHERE m.oid <> me.oid AND (m.rolsuper OR m.rolbypassrls) AND pg_catalog.pg_has_role(me.oid, m.oid, 'MEMBER')
        ORDER BY 1) AS privileged,
  ARRAY(SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
        WHERE c.relowner = me.oid AND c.relrowsecurity
        ORDER BY 1) AS owned,
  ARRAY(SELECT m.rolname::text FROM pg_catalog.pg_roles m
        WHERE m.rolname = ANY ($5::text[]) AND pg_catalog.pg_has_role(me.oid, m.oid, 'MEMBER')
        ORDER BY 1) AS predefined,
  session_user::text AS login,
  ARRAY(SELECT f FROM pg_catalog.unnest($9::text[]) AS f WHERE NOT pg_catalog.has_function_privilege(me.oid, f, 'EXECUTE') ORDER BY 1) AS uncallable,
  (SELECT datname::text FROM db) AS database,
  ARRAY(SELECT grantee FROM db_grants WHERE privilege_type = 'TEMPORARY' ORDER BY 1) AS temporary,
  ARRAY(SELECT grantee FROM db_grants WHERE privilege_type = 'CREATE' ORDER BY 1) AS create,
  coalesce((SELECT pg_catalog.json_agg(s ORDER BY s.schema) FROM (
    SELECT n.nspname::text AS schema, pg_catalog.pg_has_role(me.oid, n.nspowner, 'MEMBER') AS owned,
           ARRAY(SELECT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END
                 FROM pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
                 WHERE a.privilege_type = 'CREATE' AND (a.grantee = 0 OR a.grantee IN (SELECT oid FROM reach)) ORDER BY 1) AS grantees
    FROM pg_catalog.pg_namespace n
    WHERE n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast%'
      AND EXISTS (SELECT FROM reach WHERE pg_catalog.has_schema_privilege(reach.oid, n.oid, 'CREATE'))) s), '[]') AS schemas,
  coalesce((SELECT pg_catalog.json_agg(json_build_object('setting', c.setting, 'forRole', s.setrole <> 0, 'forDatabase', s.setdatabase <> 0)
                                       ORDER BY s.setrole = 0, s.setdatabase = 0, c.n)
    FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) WITH ORDINALITY AS c (setting, n)
    WHERE s.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user))
      AND s.setdatabase IN (0, (SELECT oid FROM db))), '[]') AS settings,
  coalesce((SELECT pg_catalog.json_agg(json_build_object('channel', o.channel, 'object', o.object, 'ownerIsSuperuser', owner.rolsuper) ORDER BY o.channel, o.object)
    FROM objects o JOIN pg_catalog.pg_roles owner ON owner.oid = o.owner
    WHERE o.usable AND (o.namespace = 'pg_catalog'::pg_catalog.regnamespace OR o.oid IN (
      SELECT d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
      WHERE d.classid = o.catalog AND d.deptype = 'e' AND e.extname = ANY ($6::text[])))), '[]') AS channels
FROM me`

/** The patterns of SHARED_ROLE_CHANNELS as the facts query's parameters. */
function channelParameters (kind: 'functions' | 'views'): [string[], string[]] {
  const pairs = SHARED_ROLE_CHANNELS.flatMap(({ channel, [kind]: patterns }) => patterns.map((pattern) => [channel, pattern] as const))
  return [pairs.map(([channel]) => channel), pairs.map(([, pattern]) => pattern)]
}

const FACT_PARAMETERS = [
  ...channelParameters('functions'), ...channelParameters('views'), REFUSED_PREDEFINED_ROLES, CHANNEL_EXTENSIONS,
  OWN_TRANSACTION_STATISTICS.functions, OWN_TRANSACTION_STATISTICS.views, COMMIT_CHECK_FUNCTIONS
]

/** The role a pool's connections run as, what makes it unsafe (refused), and what only a superuser could still close (warned). */
export interface RoleInspection {
  role: string
  problems: RoleProblem[]
  warnings: RoleProblem[]
}

function bypassProblems ({ role, rolsuper, rolbypassrls, privileged, owned, uncallable }: RoleFacts): RoleProblem[] {
  const problems: RoleProblem[] = []
  // Refused although only a superuser can fix it: without these every transaction would fail to open.
  if (uncallable.length > 0) problems.push({ role, problem: `cannot execute ${uncallable.join(', ')}, which the commit check needs (they report only the role's own transaction)`, fix: `as a superuser: GRANT EXECUTE ON FUNCTION ${uncallable.join(', ')} TO "${role}"` })
  if (rolsuper) problems.push({ role, problem: 'is a superuser, so RLS policies do not apply to it', fix: `connect as a role created with NOSUPERUSER (ALTER ROLE "${role}" NOSUPERUSER)` })
  if (rolbypassrls) problems.push({ role, problem: 'has BYPASSRLS, so RLS policies do not apply to it', fix: `ALTER ROLE "${role}" NOBYPASSRLS` })
  if (privileged.length > 0) problems.push({ role, problem: `is a member of ${privileged.join(', ')}, which bypass RLS (SET ROLE would switch it off)`, fix: `REVOKE ${privileged.join(', ')} FROM "${role}"` })
  if (owned.length > 0) problems.push({ role, problem: `owns the RLS table(s) ${owned.join(', ')}, so it could disable their policies`, fix: 'let a separate owner (migration) role own the tables and GRANT the app role SELECT, INSERT, UPDATE, DELETE' })
  return problems
}

// Everything here can be revoked by the database or schema owner, or by whoever granted the
// membership: refusals, each with the statement that fixes it.
function sharedRoleProblems ({ role, database, predefined, temporary, create, schemas }: RoleFacts): RoleProblem[] {
  const problems: RoleProblem[] = []
  const db = quoteIdentifier(database)
  if (predefined.length > 0) problems.push({ role, problem: `is a member of ${predefined.join(', ')}, which act on every tenant's backends or on the server's files`, fix: `REVOKE ${predefined.join(', ')} FROM "${role}" (or from the group role that passes it on, such as pg_monitor)` })
  if (temporary.length > 0) problems.push({ role, problem: `may create temporary tables in database ${db} (granted to ${temporary.join(', ')}): one tenant's temp table outlives its request on the connection`, fix: `as the database owner: REVOKE TEMPORARY ON DATABASE ${db} FROM ${temporary.join(', ')} (sharedRoleHardeningSql)` })
  if (create.length > 0) problems.push({ role, problem: `may create schemas in database ${db} (granted to ${create.join(', ')}): what one tenant creates, every tenant reads`, fix: `as the database owner: REVOKE CREATE ON DATABASE ${db} FROM ${create.join(', ')} (sharedRoleHardeningSql)` })
  for (const { schema, grantees, owned } of schemas) {
    const name = quoteIdentifier(schema)
    problems.push(owned
      ? { role, problem: `is a member of the owner of schema ${name}, so it may create objects there that every tenant reads`, fix: `ALTER SCHEMA ${name} OWNER TO a role "${role}" is not a member of` }
      : { role, problem: `may create objects in schema ${name} (granted to ${grantees.join(', ')}): what one tenant creates, every tenant reads`, fix: `as the schema owner: REVOKE CREATE ON SCHEMA ${name} FROM ${grantees.join(', ')} (sharedRoleHardeningSql)` })
  }
  return problems
}

// Catalog objects owned by a superuser can only be revoked by one: warnings. An object some other
// role owns (an extension installed by a managed service's admin role) is that owner's to fix: a refusal.
function channelVerdicts ({ role, channels }: RoleFacts): { problems: RoleProblem[], warnings: RoleProblem[] } {
  const problems: RoleProblem[] = []
  const warnings: RoleProblem[] = []
  for (const { channel, risk } of SHARED_ROLE_CHANNELS) {
    for (const bySuperuser of [true, false]) {
      const objects = channels.filter((object) => object.channel === channel && object.ownerIsSuperuser === bySuperuser).map(({ object }) => object)
      if (objects.length === 0) continue
      const shown = objects.length > 4 ? `${objects.slice(0, 4).join(', ')} and ${objects.length - 4} more` : objects.join(', ')
      const entry = { role, problem: `${risk} (${channel}: ${shown})`, fix: `${bySuperuser ? 'as a superuser' : 'as their owner'}: REVOKE the privilege from PUBLIC (sharedRoleSuperuserHardeningSql)` }
      ;(bySuperuser ? warnings : problems).push(entry)
    }
  }
  return { problems, warnings }
}

/** Inspects the role the pool's connections run as, and the login role's stored settings. */
export async function inspectPoolRole (pool: Pool): Promise<RoleInspection> {
  const { rows: [facts] } = await pool.query<RoleFacts>(ROLE_FACTS_SQL, FACT_PARAMETERS)
  if (facts === undefined) return { role: 'undefined', problems: [], warnings: [] }
  const settings = storedSettingVerdicts(facts.settings, facts.login, facts.database)
  const channels = channelVerdicts(facts)
  return {
    role: facts.role,
    problems: [...bypassProblems(facts), ...sharedRoleProblems(facts), ...settings.problems, ...channels.problems],
    warnings: [...settings.warnings, ...channels.warnings]
  }
}

/** One problem as a sentence: what is wrong, then the fix. */
export function describeRoleProblem ({ role, problem, fix }: RoleProblem): string {
  return `role "${role}" ${problem}; fix: ${fix}`
}

/** Receives what the startup check could not refuse (it needs a superuser to fix), to log it. */
export type RoleWarningHandler = (warning: RoleProblem) => void

// Without a handler, warnings still reach the operator: as process warnings, which Node prints.
function emitProcessWarning (warning: RoleProblem): void {
  process.emitWarning(describeRoleProblem(warning), { type: 'FastifyTenantRlsWarning', code: 'FST_TENANT_RLS_SHARED_ROLE' })
}

/**
 * Refuses (UnsafeRoleError, with the fixes) a pool whose role is unsafe; returns the role otherwise.
 * Each warning goes to `onWarning` (default: a process warning).
 */
export async function checkPoolRole (pool: Pool, onWarning: RoleWarningHandler = emitProcessWarning): Promise<string> {
  const { role, problems, warnings } = await inspectPoolRole(pool)
  if (problems.length > 0) {
    throw new UnsafeRoleError(problems.map(describeRoleProblem).join('; '))
  }
  for (const warning of warnings) onWarning(warning)
  return role
}

/** The configured setting is read by no RLS policy the role meets: every tenant query would see nothing. */
export interface SettingWarning {
  setting: string
  problem: string
  fix: string
}

// The policies on tables the role may use, as PostgreSQL deparses them: whether any of their
// expressions names the setting (as the quoted literal, so 'app.tenant' does not match inside
// 'app.tenant_id'), and which settings they read through current_setting(), for the hint.
// The privilege is asked by oid: asked by name, the planner may evaluate it for every relation of
// the catalog first (it did with a few hundred tables), and naming a pg_toast relation fails with
// "permission denied for schema pg_toast".
const POLICY_SETTINGS_SQL = `
WITH visible AS (
  SELECT pg_catalog.concat_ws(' ', pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)) AS expressions
  FROM pg_catalog.pg_policy p
  WHERE pg_catalog.has_table_privilege(p.polrelid, 'SELECT, INSERT, UPDATE, DELETE')
)
SELECT coalesce(pg_catalog.bool_or(pg_catalog.strpos(expressions, pg_catalog.quote_literal($1)) > 0), false) AS reads,
  ARRAY(SELECT DISTINCT m[1] FROM visible, pg_catalog.regexp_matches(expressions, 'current_setting\\(''([^'']+)''', 'g') AS m ORDER BY 1) AS settings
FROM visible`

/**
 * Whether an RLS policy reads `setting`; a warning with the fix when none does. Not a refusal: a
 * policy can read the setting inside a function, which the check does not look into, and a wrong
 * name fails closed (no rows, WITH CHECK errors), it does not leak.
 */
export async function inspectPolicySetting (pool: Pool, setting: string): Promise<SettingWarning | undefined> {
  const { rows: [facts] } = await pool.query<{ reads: boolean, settings: string[] }>(POLICY_SETTINGS_SQL, [setting])
  if (facts === undefined || facts.reads) return undefined
  const found = facts.settings.length > 0 ? `the policies read ${facts.settings.map((name) => `'${name}'`).join(', ')}` : 'no policy reads any setting through current_setting()'
  return {
    setting,
    problem: `no row-level security policy on a table the role may use reads the setting '${setting}' (${found}): tenant queries would return no rows and every insert would fail its WITH CHECK`,
    fix: facts.settings.length > 0
      ? `give the plugin the setting your policies read (setting: '${facts.settings[0]}'), or make the policies read current_setting('${setting}', true)`
      : `create the policies, reading current_setting('${setting}', true) (see tenantTablesSql in fastify-tenant-rls/schema); ignore this if your policies read it inside a function`
  }
}
