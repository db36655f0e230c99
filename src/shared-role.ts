// What one login role shared by every tenant lets one tenant's route do to another, beyond the rows
// RLS guards, and the SQL that takes it away. Two owners can revoke, so there are two scripts:
// - the database owner (any managed PostgreSQL has one): temporary tables, which any session of the
//   role can fill for the next request on its connection, and CREATE on the database and on schemas;
//   the startup check refuses a role that still has them;
// - a superuser, because the objects belong to the bootstrap superuser: the signal functions (end or
//   cancel another tenant's request), large objects (storage without RLS, shared by the role), and
//   the statistics views and functions (other tenants' query text, row counters, locks). Managed
//   PostgreSQL has no superuser, so the startup check only warns about these, with the fix.
// The startup check (safety-checks.ts) selects the objects with the same patterns as the script.
import { InvalidOptionError } from './errors.js'
import { quoteIdentifier } from './sql-identifier.js'

/** A group of catalog objects one tenant can use against another, which only their owner can revoke from PUBLIC. */
export interface SharedRoleChannel {
  /** Short name used in warnings. */
  channel: string
  /** What a tenant's route can do through it. */
  risk: string
  /** `LIKE` patterns on function names (pg_proc.proname). */
  functions: readonly string[]
  /** `LIKE` patterns on view names (pg_class.relname). */
  views: readonly string[]
  /** Predefined role given the privilege back after the revoke from PUBLIC, so administrators keep it. */
  regrantTo: string | null
}

/**
 * The channels only a superuser can close, all in pg_catalog (pg_stat_statements objects too, in
 * the extension's schema). Each revoke is safe for the application: no query the plugin or drizzle
 * sends uses them, and the monitoring roles (pg_signal_backend, pg_read_all_stats, pg_monitor) get
 * them back.
 */
export const SHARED_ROLE_CHANNELS: readonly SharedRoleChannel[] = Object.freeze([
  {
    channel: 'signal functions',
    risk: 'can end or cancel other tenants\' requests: pg_terminate_backend and pg_cancel_backend act on any backend of the same role',
    functions: ['pg\\_terminate\\_backend', 'pg\\_cancel\\_backend'],
    views: [],
    regrantTo: 'pg_signal_backend'
  },
  {
    channel: 'large objects',
    risk: 'can pass data to other tenants through large objects, which RLS does not cover and the shared role owns for every tenant',
    // Every function on large objects (lo_import and lo_export are superuser-only already).
    functions: ['lo\\_%', 'loread', 'lowrite'],
    views: [],
    regrantTo: null
  },
  {
    channel: 'statistics',
    risk: 'can watch other tenants\' activity: the query text of the role\'s other backends, per-table row counters, locks held',
    // pg_stat_statements_reset stays out: it is not PUBLIC's, and must not become the monitors'.
    functions: ['pg\\_stat\\_get\\_%', 'pg\\_lock\\_status', 'pg\\_stat\\_statements', 'pg\\_stat\\_statements\\_info'],
    views: ['pg\\_stat\\_%', 'pg\\_statio\\_%', 'pg_locks'],
    regrantTo: 'pg_read_all_stats'
  }
])

/**
 * Statistics of the calling backend's own transaction, which the statistics channel's patterns
 * match but which reveal nothing of other tenants: they stay PUBLIC's, and the plugin's commit
 * check relies on them (tenant-transaction.ts, SHARED_CATALOG_WRITES).
 */
export const OWN_TRANSACTION_STATISTICS = Object.freeze({
  functions: Object.freeze(['pg\\_stat\\_get\\_xact\\_%']),
  views: Object.freeze(['pg\\_stat\\_xact\\_%'])
})

/** Extensions whose objects count as catalog objects for the channels (the rest of an installation's schemas are the user's). */
export const CHANNEL_EXTENSIONS: readonly string[] = Object.freeze(['pg_stat_statements'])

/** Options of `sharedRoleHardeningSql`. */
export interface SharedRoleHardeningOptions {
  /** Role the application connects as (or a group role it is a member of). */
  role: string
  /** Database the application uses. */
  database: string
  /** Schemas to take CREATE away on, from PUBLIC and the role. Default `['public']`. */
  schemas?: readonly string[]
}

const PLAIN_NAME = /^[a-z_][a-z0-9_$]*$/

function plainName (what: string, name: unknown): string {
  if (typeof name !== 'string' || !PLAIN_NAME.test(name)) {
    throw new InvalidOptionError(`sharedRoleHardeningSql: ${what} must be a plain lower-case name, got ${JSON.stringify(name)}`)
  }
  return quoteIdentifier(name)
}

/**
 * The SQL the database owner (no superuser needed) runs once per database, after which the startup
 * check accepts the role: no temporary objects (a temp table outlives the request's transaction on
 * its connection), no CREATE on the database or on `schemas` (an object one tenant creates, every
 * tenant reads). Revoked from PUBLIC too, because PostgreSQL grants TEMPORARY to PUBLIC on every new
 * database; grant it back to any other role that needs it. Statements are separated by drizzle's
 * `--> statement-breakpoint`.
 */
export function sharedRoleHardeningSql (options: SharedRoleHardeningOptions): string {
  const role = plainName('role', options.role)
  const database = plainName('database', options.database)
  const schemas = (options.schemas ?? ['public']).map((schema) => plainName('schema', schema))
  const statements = [
    `REVOKE TEMPORARY, CREATE ON DATABASE ${database} FROM PUBLIC, ${role};`,
    ...schemas.map((schema) => `REVOKE CREATE ON SCHEMA ${schema} FROM PUBLIC, ${role};`)
  ]
  const header = `-- sharedRoleHardeningSql (fastify-tenant-rls/schema): run as the owner of database ${options.database}\n`
  return header + statements.join('\n--> statement-breakpoint\n') + '\n'
}

function literal (value: string): string {
  return `'${value.replaceAll("'", "''")}'`
}

function exceptions (kind: 'functions' | 'views'): string {
  return `ARRAY[${OWN_TRANSACTION_STATISTICS[kind].map(literal).join(', ')}]`
}

function patternRows (kind: 'functions' | 'views'): string {
  return SHARED_ROLE_CHANNELS
    .flatMap((channel) => channel[kind].map((pattern) => `(${literal(pattern)}, ${channel.regrantTo === null ? 'NULL' : literal(channel.regrantTo)})`))
    .join(', ')
}

/**
 * The SQL a superuser runs once per database (function and view privileges are per database) to
 * close the channels of SHARED_ROLE_CHANNELS: EXECUTE or SELECT is revoked from PUBLIC and given
 * back to the channel's predefined role. One DO block, so that it selects exactly the objects this
 * server version has, with the patterns the startup check uses. Run by anyone else it changes
 * nothing (PostgreSQL only warns) and the startup warnings stay. Only what PUBLIC holds is moved,
 * so a second run changes nothing.
 */
export function sharedRoleSuperuserHardeningSql (): string {
  const extensions = CHANNEL_EXTENSIONS.map(literal).join(', ')
  return `-- sharedRoleSuperuserHardeningSql (fastify-tenant-rls/schema): run as a superuser in each database
DO $hardening$
DECLARE
  target record;
BEGIN
  FOR target IN
    SELECT 'FUNCTION ' || p.oid::pg_catalog.regprocedure::text AS object, 'EXECUTE' AS privilege, c.regrant
      FROM pg_catalog.pg_proc p JOIN (VALUES ${patternRows('functions')}) AS c (pattern, regrant) ON p.proname LIKE c.pattern AND NOT p.proname LIKE ANY (${exceptions('functions')})
     WHERE (p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
        OR p.oid IN (SELECT d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                      WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e' AND e.extname IN (${extensions})))
       AND EXISTS (SELECT FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
                    WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
    UNION ALL
    SELECT 'TABLE ' || v.oid::pg_catalog.regclass::text, 'SELECT', c.regrant
      FROM pg_catalog.pg_class v JOIN (VALUES ${patternRows('views')}) AS c (pattern, regrant) ON v.relname LIKE c.pattern AND NOT v.relname LIKE ANY (${exceptions('views')})
     WHERE v.relkind = 'v' AND (v.relnamespace = 'pg_catalog'::pg_catalog.regnamespace
        OR v.oid IN (SELECT d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'e' AND e.extname IN (${extensions})))
       AND EXISTS (SELECT FROM pg_catalog.aclexplode(coalesce(v.relacl, pg_catalog.acldefault('r', v.relowner))) a
                    WHERE a.grantee = 0 AND a.privilege_type = 'SELECT')
  LOOP
    EXECUTE 'REVOKE ' || target.privilege || ' ON ' || target.object || ' FROM PUBLIC';
    IF target.regrant IS NOT NULL THEN
      EXECUTE 'GRANT ' || target.privilege || ' ON ' || target.object || ' TO ' || target.regrant;
    END IF;
  END LOOP;
END
$hardening$;
`
}
