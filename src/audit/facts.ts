// The audit's facts: one catalog query, read-only, that gathers everything the rule families judge,
// for one application role, one schema and one tenant column. No verdict here: the rule modules
// are plain TypeScript over these facts, so each can be tested on its own and the startup check
// can share them. The connection may be any role that can read the catalogs (the app role itself,
// the owner, a superuser): every privilege is asked about the app role by oid, never current_user.
import type { ClientBase, Pool } from 'pg'
import { AuditRoleNotFoundError, AuditSchemaNotFoundError } from '../errors.js'
import { notLibraryTableSql } from '../tenant-catalog.js'

/** One RLS policy on a tenant table, as PostgreSQL deparses it. */
export interface PolicyFacts {
  name: string
  /** `*` all, `r` select, `a` insert, `w` update, `d` delete (pg_policy.polcmd). */
  command: '*' | 'r' | 'a' | 'w' | 'd'
  permissive: boolean
  roles: string[]
  /** The policy applies to the app role itself (TO public or TO the role). */
  appliesToApp: boolean
  /** Roles of the policy the app role inherits through membership (not itself, not public). */
  inheritedRoles: string[]
  using: string | null
  withCheck: string | null
}

export interface ForeignKeyFacts {
  name: string
  columns: string[]
  parent: string
  parentColumns: string[]
  parentIsTenantTable: boolean
  /** pg_constraint.confdeltype: `c` cascade, `a` no action, `r` restrict, `n` set null, `d` set default. */
  onDelete: string
}

export interface UniqueIndexFacts {
  /** The constraint's name, or the index's when there is no constraint. */
  name: string
  isConstraint: boolean
  primary: boolean
  includesTenant: boolean
}

export interface TenantTableFacts {
  /** As the catalog spells it for this connection (schema-qualified outside the search path). */
  name: string
  /** The bare table name. */
  relname: string
  rls: boolean
  forced: boolean
  columnType: string
  notNull: boolean
  /** What the app role may do to the table. */
  privileges: { select: boolean, insert: boolean, update: boolean, delete: boolean }
  policies: PolicyFacts[]
  foreignKeys: ForeignKeyFacts[]
  uniqueIndexes: UniqueIndexFacts[]
  tenantLeadingIndex: boolean
}

export interface GlobalRelationFacts {
  name: string
  /** `r` table, `p` partitioned table, `v` view, `m` materialized view, `f` foreign table. */
  kind: string
  relname: string
}

export interface ViewFacts {
  name: string
  owner: string
  /** Superuser, BYPASSRLS, or the owner (by membership) of an unforced tenant table it reads. */
  ownerBypasses: boolean
  securityInvoker: boolean
  appCanRead: boolean
  reads: string[]
}

export interface FunctionFacts {
  name: string
  owner: string
}

export interface SequenceFacts {
  name: string
  table: string
  column: string
}

export interface RoleFacts {
  name: string
  superuser: boolean
  bypassrls: boolean
  bypassingMemberships: string[]
  ownedTenantTables: string[]
  createSchemas: string[]
  database: string
  createDatabase: boolean
  temporary: boolean
}

/** Everything the audit rules judge. */
export interface AuditFacts {
  serverVersionNum: number
  serverVersion: string
  role: RoleFacts
  tables: TenantTableFacts[]
  globals: GlobalRelationFacts[]
  views: ViewFacts[]
  materializedViews: ViewFacts[]
  functions: FunctionFacts[]
  sequences: SequenceFacts[]
}

/** What the facts are gathered for. */
export interface FactScope {
  appRole: string
  schema: string
  tenantColumn: string
}

/** A pool or one client (pg.Client, a checked-out PoolClient): the facts are one statement. */
export type Queryable = Pool | ClientBase

// $1 app role, $2 tenant column, $3 schema. System schemas are never audited: what PostgreSQL
// ships there is the shared-role check's business (safety-checks.ts).
// "reads" follows views transitively (a view over a view over a tenant table) through the rewrite
// rules' dependencies; the owner of a view is the role whose rights reach the tables beneath it.
// A role "bypasses" a table when it is a superuser, has BYPASSRLS, or owns it (membership counts,
// as PostgreSQL's ownership check does) while the table is not FORCE'd.
const AUDIT_FACTS_SQL = `
WITH RECURSIVE app AS (
  SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = $1
),
target AS (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $3),
tenant_tables AS (
  SELECT c.oid, c.relname, c.relowner, c.relrowsecurity, c.relforcerowsecurity, a.attnum, a.attnotnull,
         pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2 AND NOT a.attisdropped
  WHERE c.relnamespace IN (SELECT oid FROM target) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND ${notLibraryTableSql('c')}
),
user_relations AS (
  SELECT c.oid, c.relkind, c.relname, c.relowner, c.relnamespace, c.reloptions
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
),
reads (view, base) AS (
  SELECT rw.ev_class, d.refobjid
  FROM pg_catalog.pg_rewrite rw JOIN pg_catalog.pg_depend d
    ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = rw.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
  WHERE d.refobjid <> rw.ev_class AND rw.ev_class IN (SELECT oid FROM user_relations WHERE relkind IN ('v', 'm'))
  UNION
  SELECT reads.view, d.refobjid
  FROM reads JOIN pg_catalog.pg_rewrite rw ON rw.ev_class = reads.base
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = rw.oid
    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> rw.ev_class
),
tenant_reads AS (SELECT DISTINCT r.view, r.base FROM reads r JOIN tenant_tables t ON t.oid = r.base),
bypassing AS (
  SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolsuper OR o.rolbypassrls
),
readable_schemas AS (
  SELECT n.oid FROM pg_catalog.pg_namespace n, app WHERE pg_catalog.has_schema_privilege(app.oid, n.oid, 'USAGE')
),
views AS (
  SELECT v.oid, v.relkind, pg_catalog.pg_get_userbyid(v.relowner) AS owner,
    v.relowner IN (SELECT oid FROM bypassing) OR EXISTS (
      SELECT FROM tenant_reads r JOIN tenant_tables t ON t.oid = r.base
      WHERE r.view = v.oid AND NOT t.relforcerowsecurity AND pg_catalog.pg_has_role(v.relowner, t.relowner, 'USAGE')) AS owner_bypasses,
    coalesce(v.reloptions && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=1', 'security_invoker=yes'], false) AS security_invoker,
    v.relnamespace IN (SELECT oid FROM readable_schemas) AND pg_catalog.has_any_column_privilege(app.oid, v.oid, 'SELECT') AS app_can_read,
    ARRAY(SELECT r.base::pg_catalog.regclass::text FROM tenant_reads r WHERE r.view = v.oid ORDER BY 1) AS reads
  FROM user_relations v, app
  WHERE v.relkind IN ('v', 'm') AND v.oid IN (SELECT view FROM tenant_reads)
)
SELECT pg_catalog.current_setting('server_version_num')::int AS "serverVersionNum",
  pg_catalog.current_setting('server_version') AS "serverVersion",
  (SELECT pg_catalog.json_build_object(
    'name', app.rolname, 'superuser', app.rolsuper, 'bypassrls', app.rolbypassrls,
    'bypassingMemberships', ARRAY(SELECT m.rolname::text FROM pg_catalog.pg_roles m
      WHERE m.oid <> app.oid AND m.oid IN (SELECT oid FROM bypassing) AND pg_catalog.pg_has_role(app.oid, m.oid, 'MEMBER') ORDER BY 1),
    'ownedTenantTables', ARRAY(SELECT t.oid::pg_catalog.regclass::text FROM tenant_tables t WHERE pg_catalog.pg_has_role(app.oid, t.relowner, 'MEMBER') ORDER BY 1),
    'createSchemas', ARRAY(SELECT n.nspname::text FROM pg_catalog.pg_namespace n
      WHERE pg_catalog.has_schema_privilege(app.oid, n.oid, 'CREATE') AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' ORDER BY 1),
    'database', pg_catalog.current_database(),
    'createDatabase', pg_catalog.has_database_privilege(app.oid, pg_catalog.current_database(), 'CREATE'),
    'temporary', pg_catalog.has_database_privilege(app.oid, pg_catalog.current_database(), 'TEMPORARY')) FROM app) AS role,
  coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
    'name', t.oid::pg_catalog.regclass::text, 'relname', t.relname, 'rls', t.relrowsecurity, 'forced', t.relforcerowsecurity,
    'columnType', t.type, 'notNull', t.attnotnull,
    'privileges', pg_catalog.json_build_object(
      'select', pg_catalog.has_table_privilege(app.oid, t.oid, 'SELECT'), 'insert', pg_catalog.has_table_privilege(app.oid, t.oid, 'INSERT'),
      'update', pg_catalog.has_table_privilege(app.oid, t.oid, 'UPDATE'), 'delete', pg_catalog.has_table_privilege(app.oid, t.oid, 'DELETE')),
    'policies', coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
        'name', p.polname, 'command', p.polcmd, 'permissive', p.polpermissive,
        'roles', ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r)::text END FROM pg_catalog.unnest(p.polroles) r),
        'appliesToApp', 0 = ANY (p.polroles) OR app.oid = ANY (p.polroles),
        'inheritedRoles', ARRAY(SELECT pg_catalog.pg_get_userbyid(r)::text FROM pg_catalog.unnest(p.polroles) r
          WHERE r <> 0 AND r <> app.oid AND pg_catalog.pg_has_role(app.oid, r, 'MEMBER') ORDER BY 1),
        'using', pg_catalog.pg_get_expr(p.polqual, p.polrelid), 'withCheck', pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))
      ORDER BY p.polname) FROM pg_catalog.pg_policy p WHERE p.polrelid = t.oid), '[]'),
    'foreignKeys', coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
        'name', k.conname, 'parent', k.confrelid::pg_catalog.regclass::text, 'onDelete', k.confdeltype,
        'parentIsTenantTable', k.confrelid IN (SELECT oid FROM tenant_tables),
        'columns', ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY AS c (num, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = c.num ORDER BY c.ord),
        'parentColumns', ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(k.confkey) WITH ORDINALITY AS c (num, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = c.num ORDER BY c.ord))
      ORDER BY k.conname) FROM pg_catalog.pg_constraint k WHERE k.conrelid = t.oid AND k.contype = 'f'), '[]'),
    'uniqueIndexes', coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
        'name', coalesce(con.conname, i.indexrelid::pg_catalog.regclass::text), 'isConstraint', con.oid IS NOT NULL, 'primary', i.indisprimary,
        'includesTenant', EXISTS (SELECT FROM pg_catalog.generate_series(0, i.indnkeyatts - 1) k WHERE i.indkey[k] = t.attnum))
      ORDER BY 1) FROM pg_catalog.pg_index i LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = t.oid AND con.contype IN ('p', 'u')
      WHERE i.indrelid = t.oid AND i.indisunique), '[]'),
    'tenantLeadingIndex', EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = t.oid AND i.indkey[0] = t.attnum))
    ORDER BY t.oid::pg_catalog.regclass::text) FROM tenant_tables t, app), '[]') AS tables,
  coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object('name', c.oid::pg_catalog.regclass::text, 'kind', c.relkind, 'relname', c.relname) ORDER BY c.relname)
    FROM user_relations c, app
    WHERE c.relnamespace IN (SELECT oid FROM target) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $2 AND NOT a.attisdropped)
      AND c.oid NOT IN (SELECT view FROM tenant_reads)
      AND c.relnamespace IN (SELECT oid FROM readable_schemas) AND pg_catalog.has_any_column_privilege(app.oid, c.oid, 'SELECT')), '[]') AS globals,
  coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object('name', v.oid::pg_catalog.regclass::text, 'owner', v.owner, 'ownerBypasses', v.owner_bypasses,
    'securityInvoker', v.security_invoker, 'appCanRead', v.app_can_read, 'reads', v.reads) ORDER BY v.oid::pg_catalog.regclass::text) FROM views v WHERE v.relkind = 'v'), '[]') AS views,
  coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object('name', v.oid::pg_catalog.regclass::text, 'owner', v.owner, 'ownerBypasses', v.owner_bypasses,
    'securityInvoker', v.security_invoker, 'appCanRead', v.app_can_read, 'reads', v.reads) ORDER BY v.oid::pg_catalog.regclass::text) FROM views v WHERE v.relkind = 'm'), '[]') AS "materializedViews",
  coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object('name', f.oid::pg_catalog.regprocedure::text, 'owner', pg_catalog.pg_get_userbyid(f.proowner)) ORDER BY 1)
    FROM pg_catalog.pg_proc f JOIN pg_catalog.pg_namespace n ON n.oid = f.pronamespace, app
    WHERE f.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND (f.proowner IN (SELECT oid FROM bypassing)
           OR EXISTS (SELECT FROM tenant_tables t WHERE NOT t.relforcerowsecurity AND pg_catalog.pg_has_role(f.proowner, t.relowner, 'USAGE')))
      AND f.pronamespace IN (SELECT oid FROM readable_schemas) AND pg_catalog.has_function_privilege(app.oid, f.oid, 'EXECUTE')), '[]') AS functions,
  coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object('name', s.oid::pg_catalog.regclass::text, 'table', t.oid::pg_catalog.regclass::text, 'column', a.attname) ORDER BY 1)
    FROM pg_catalog.pg_class s
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = s.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i')
    JOIN tenant_tables t ON t.oid = d.refobjid
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid, app
    WHERE s.relkind = 'S' AND (pg_catalog.has_sequence_privilege(app.oid, s.oid, 'USAGE, SELECT, UPDATE')
      OR (d.deptype = 'i' AND pg_catalog.has_table_privilege(app.oid, t.oid, 'INSERT')))), '[]') AS sequences,
  (SELECT count(*) FROM target) AS schemas
`

/** Reads the facts for `scope`; refuses an unknown role or schema rather than report a clean audit of nothing. */
export async function readAuditFacts (db: Queryable, scope: FactScope): Promise<AuditFacts> {
  const { rows: [row] } = await db.query<AuditFacts & { schemas: string }>(AUDIT_FACTS_SQL, [scope.appRole, scope.tenantColumn, scope.schema])
  if (row === undefined || row.role === null) throw new AuditRoleNotFoundError(scope.appRole)
  if (Number(row.schemas) === 0) throw new AuditSchemaNotFoundError(scope.schema)
  const { schemas: _schemas, ...facts } = row
  return facts
}
