// The database half of the signed tenant context: the schema tenant_rls, the table of signing keys
// (readable by its owner only), the view that verifies the signature (tenant_rls.verified_tenant),
// the function the policies call (tenant_rls.current_tenant(), which reads that view), the key
// helpers and the grants, as one migration (`signedContextSql`), and the policy's tenant
// expression in this mode (`signedCurrentTenantSql`).
//
// Why a view behind a function. The check must read the keys, which the application role may not:
// a view reads its tables with its owner's rights, and it stores the functions and operators it
// calls by oid, so no search_path and no object the caller creates (pg_temp included) can replace
// one of them. The policies still call a function rather than read the view, because PostgreSQL
// plans a view into every statement that reads it: a statement planned per execution (unprepared,
// or a prepared one on custom plans) paid about 30 µs more planning for the view, while the
// function is planned once per connection (its query is a cached plan) and costs the policy
// nothing to plan. The function is a PL/pgSQL wrapper of one query, SECURITY INVOKER and with no
// SET clause (the first version was a SECURITY DEFINER function that did the whole check in
// PL/pgSQL, about twice as costly per statement: bench/signed-context-sql.ts). The owner must be
// a plain role: a superuser or BYPASSRLS owner would turn any flaw in the view into a way around
// every policy (inspection.ts refuses both).
//
// HMAC-SHA256 is built from the core sha256() (PostgreSQL 11+), not pgcrypto: no extension to
// install (or to be refused by a managed service), no extension schema on the search path. The
// table keeps each key's inner and outer padded blocks, which is all HMAC needs, so a verification
// costs two sha256() calls over a few dozen bytes.
import { failOption } from '../errors.js'
import { DEFAULT_SETTING, validateSetting } from '../options.js'
import { TENANT_ID_CAST, validateTenantIdType } from '../tenant-id.js'
import type { TenantIdType } from '../tenant-id.js'
import { MIN_SECRET_BYTES } from './options.js'
import { SIGNATURE_SETTING, SIGNATURE_VERSION } from './signer.js'

/** The schema that holds the key table and the functions. */
export const SIGNED_CONTEXT_SCHEMA = 'tenant_rls'
/** The function the policies call in signed mode: the tenant when the signature holds, else NULL. */
export const CURRENT_TENANT_FUNCTION = `${SIGNED_CONTEXT_SCHEMA}.current_tenant()`
/** The view that verifies the signature: one row, the tenant, when it holds; none otherwise. */
export const VERIFIED_TENANT_VIEW = `${SIGNED_CONTEXT_SCHEMA}.verified_tenant`
/** The table of signing keys (inner and outer HMAC blocks); only its owner reads it. */
export const SIGNING_KEYS_TABLE = `${SIGNED_CONTEXT_SCHEMA}.signing_keys`

/** Options of `signedContextSql`. */
export interface SignedContextSqlOptions {
  /** Role the application connects as (or a group role it is a member of): may call current_tenant() and read the view it reads, nothing else. */
  role: string
  /**
   * Role that owns the schema, the keys, the view and the functions: not a superuser, no BYPASSRLS, and not
   * a role the application role is a member of. The tables' owner (migration role) will do.
   */
  owner: string
  /** Setting the plugin sets the tenant in; must match its `setting`. Default `'app.current_tenant_id'`. */
  setting?: string
}

const PLAIN_NAME = /^[a-z_][a-z0-9_]*$/

// Plain lower-case names only: they are written into the SQL as they are.
function plainRole (what: string, name: unknown): string {
  if (typeof name !== 'string' || !PLAIN_NAME.test(name)) failOption(`signedContextSql: ${what} must be a plain lower-case role name, got ${JSON.stringify(name)}`)
  return name
}

/** The verified tenant as SQL (NULL unless the signature holds), for the policies of signed mode. */
export function signedCurrentTenantSql (tenantIdType: TenantIdType = 'uuid'): string {
  return `${CURRENT_TENANT_FUNCTION}${TENANT_ID_CAST[validateTenantIdType(tenantIdType)]}`
}

// Every way a signature can be wrong ends in no row, never in an error: a malformed value set by
// route code must deny, not abort the statement with a message about the format. Nothing before the
// MAC comparison can fail on any text (split_part, concat_ws, convert_to, encode), and the one cast,
// of the expiry to bigint, runs only in the CASE's branch for a MAC that matched, so on a value the
// plugin signed: digits. The tenant must be set for that branch too: with the tenant missing,
// concat_ws would drop its line and an expiry field holding "<expiry> LF <tenant>" could rebuild
// another context's message.
// The view is as small as the check allows, because PostgreSQL prepares every function call of it
// again in each execution: one table scanned, the key found by its primary key, the fields cut
// with split_part, the MAC compared as hex text (no check of the field's format needed first).
// The expiry is compared with now(), the database clock at the transaction's start: the opening
// sets the signature in the transaction's first round trip, and a long transaction (a withTenant
// job) keeps the context it was opened with. The message is signer.ts's, field for field.
function verifiedTenantView (setting: string): string {
  const tenant = `current_setting('${setting}', true)`
  const field = (n: number): string => `split_part(current_setting('${SIGNATURE_SETTING}', true), '.', ${n})`
  return `CREATE VIEW ${VERIFIED_TENANT_VIEW} AS
SELECT nullif(${tenant}, '') AS tenant_id
FROM ${SIGNING_KEYS_TABLE} AS k
WHERE k.id = ${field(2)}
  AND CASE
    WHEN nullif(${tenant}, '') IS NOT NULL AND ${field(1)} = '${SIGNATURE_VERSION}' AND ${field(5)} = ''
      AND encode(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(concat_ws(E'\\n', 'fastify-tenant-rls/${SIGNATURE_VERSION}', k.id, pg_backend_pid()::text, ${field(3)}, ${tenant}), 'UTF8'))), 'hex') = ${field(4)}
    THEN ${field(3)}::bigint > (extract(epoch FROM now()) * 1000)::bigint
    ELSE false END;`
}

// SECURITY INVOKER: it writes the key table with the caller's own rights, so only the owner (or a
// superuser) can install a key even if EXECUTE were granted wider by mistake. A secret longer than
// the 64-byte block is hashed first, as HMAC does.
const ADD_KEY_FUNCTION = `CREATE FUNCTION ${SIGNED_CONTEXT_SCHEMA}.add_key(key_id text, secret bytea) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $add_key$
DECLARE
  block bytea;
  ipad bytea;
  opad bytea;
BEGIN
  IF secret IS NULL OR length(secret) < ${MIN_SECRET_BYTES} THEN
    RAISE EXCEPTION 'tenant_rls.add_key: the secret of key % must be at least ${MIN_SECRET_BYTES} bytes', key_id USING ERRCODE = '22023';
  END IF;
  block := CASE WHEN length(secret) > 64 THEN sha256(secret) ELSE secret END;
  block := block || decode(repeat('00', 64 - length(block)), 'hex');
  ipad := block;
  opad := block;
  FOR i IN 0..63 LOOP
    ipad := set_byte(ipad, i, get_byte(block, i) # 54);
    opad := set_byte(opad, i, get_byte(block, i) # 92);
  END LOOP;
  INSERT INTO ${SIGNING_KEYS_TABLE} (id, inner_pad, outer_pad) VALUES (key_id, ipad, opad);
END
$add_key$;`

const REMOVE_KEY_FUNCTION = `CREATE FUNCTION ${SIGNED_CONTEXT_SCHEMA}.remove_key(key_id text) RETURNS boolean
LANGUAGE sql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $remove_key$
  WITH removed AS (DELETE FROM ${SIGNING_KEYS_TABLE} WHERE id = key_id RETURNING id)
  SELECT count(*) > 0 FROM removed
$remove_key$;`

// The function the policies call: one query, the view, planned once per connection (PL/pgSQL keeps
// its plan). SECURITY INVOKER, so the view's owner rights are the only ones in play, and no SET
// clause, which would cost a configuration change per call: its one query names a schema-qualified
// relation and calls nothing, so no search_path can change what it reads.
const CURRENT_TENANT_FUNCTION_SQL = `CREATE FUNCTION ${CURRENT_TENANT_FUNCTION} RETURNS text
LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL RESTRICTED
AS $current_tenant$
BEGIN
  RETURN (SELECT tenant_id FROM ${VERIFIED_TENANT_VIEW});
END
$current_tenant$;`

// The view and the function, handed to the owner, for `role` to call (and so to read the view).
function verifierStatements (role: string, owner: string, setting: string): string[] {
  return [
    verifiedTenantView(setting),
    `ALTER VIEW ${VERIFIED_TENANT_VIEW} OWNER TO ${owner};`,
    `REVOKE ALL ON TABLE ${VERIFIED_TENANT_VIEW} FROM PUBLIC;`,
    CURRENT_TENANT_FUNCTION_SQL,
    `ALTER FUNCTION ${CURRENT_TENANT_FUNCTION} OWNER TO ${owner};`,
    `REVOKE ALL ON FUNCTION ${CURRENT_TENANT_FUNCTION} FROM PUBLIC;`,
    `GRANT USAGE ON SCHEMA ${SIGNED_CONTEXT_SCHEMA} TO ${role};`,
    `GRANT SELECT ON TABLE ${VERIFIED_TENANT_VIEW} TO ${role};`,
    `GRANT EXECUTE ON FUNCTION ${CURRENT_TENANT_FUNCTION} TO ${role};`
  ]
}

/**
 * The migration of signed mode: schema tenant_rls, its key table, the view verified_tenant, the
 * function current_tenant() and the key helpers, all owned by `owner`, and for `role` EXECUTE on
 * current_tenant() and SELECT on the view it reads (and nothing else).
 * Run it as `owner` (it needs CREATE on the database) or as a superuser: every object is handed to
 * `owner` explicitly, so a superuser-run migration leaves no superuser-owned function behind.
 * Apply it before the tables whose policies call the function. Statements are separated by
 * drizzle's `--> statement-breakpoint`; one transaction, so the key helpers are never callable by
 * PUBLIC in between (PostgreSQL grants EXECUTE to PUBLIC on creation).
 */
export function signedContextSql (options: SignedContextSqlOptions): string {
  const role = plainRole('role', options.role)
  const owner = plainRole('owner', options.owner)
  if (role === owner) failOption('signedContextSql: owner must not be the application role; the application role must not be able to read the keys')
  const setting = validateSetting(options.setting ?? DEFAULT_SETTING)
  const schema = SIGNED_CONTEXT_SCHEMA
  const statements = [
    `CREATE SCHEMA ${schema} AUTHORIZATION ${owner};`,
    `REVOKE ALL ON SCHEMA ${schema} FROM PUBLIC;`,
    `CREATE TABLE ${SIGNING_KEYS_TABLE} (
  id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,32}$'),
  inner_pad bytea NOT NULL CHECK (length(inner_pad) = 64),
  outer_pad bytea NOT NULL CHECK (length(outer_pad) = 64),
  added_at timestamptz NOT NULL DEFAULT now()
);`,
    `ALTER TABLE ${SIGNING_KEYS_TABLE} OWNER TO ${owner};`,
    `REVOKE ALL ON TABLE ${SIGNING_KEYS_TABLE} FROM PUBLIC;`,
    ADD_KEY_FUNCTION,
    REMOVE_KEY_FUNCTION,
    ...['add_key(text, bytea)', 'remove_key(text)'].flatMap((fn) => [
      `ALTER FUNCTION ${schema}.${fn} OWNER TO ${owner};`,
      `REVOKE ALL ON FUNCTION ${schema}.${fn} FROM PUBLIC;`
    ]),
    ...verifierStatements(role, owner, setting)
  ]
  const header = `-- signedContextSql (fastify-tenant-rls/schema): run as ${owner} or a superuser, before the tenant tables\n`
  return header + statements.join('\n--> statement-breakpoint\n') + '\n'
}
