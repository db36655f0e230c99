// The audit trail of every elevated event: one append-only, hash-chained table. Its DDL is shipped
// for migrations (auditTrailSql); rows are appended by single statements of their own, outside any
// job's transaction, so a job that rolls back cannot take its audit rows with it. A trigger stamps
// each row (sequence number, time, the previous row's hash, its own hash) under a lock, so the
// chain has one order whoever writes; other triggers refuse UPDATE, DELETE and TRUNCATE even for
// the table's owner. A superuser can still disable triggers; the chain is what makes that visible:
// verifyAuditChain recomputes every hash and link, and an anchor (the head it returned earlier,
// kept elsewhere) also reveals a cut-off tail or a chain rewritten from scratch.
import { createHash } from 'node:crypto'
import type { Pool } from 'pg'
import { failOption, TenantInvalidError } from '../errors.js'
import { LIBRARY_TABLE_COMMENT } from '../tenant-catalog.js'
import { normalizeTenantId, validateTenantIdType } from '../tenant-id.js'
import type { TenantIdType } from '../tenant-id.js'
import { roleName, tableName, DEFAULT_AUDIT_TABLE } from './tables.js'
import type { TableName } from './tables.js'
import { MAX_ACTOR_LENGTH, MAX_REASON_LENGTH } from './accountability.js'

/** What happened, as recorded in the trail's `event` column. */
export type AuditEvent =
  | 'system_job.started' | 'system_job.committed' | 'system_job.rolled_back'
  | 'grant.created' | 'grant.revoked' | 'break_glass.opened' | 'break_glass.reviewed'
  /** A request under impersonation (admitted, refused or never checked), recorded by the plugin through the system pool. */
  | 'impersonation.request'

/** The previous hash of the first row. */
const GENESIS = '0'.repeat(64)

/** Options of `auditTrailSql`. */
export interface AuditTrailSqlOptions {
  /** The system pool's role: it appends rows and reads the trail (reports, verification). */
  systemRole: string
  /** Where the trail lives. Default `'public.tenant_rls_audit'`. */
  auditTable?: string
}

/**
 * The DDL of the audit trail, for a migration run by the table owner (not a superuser): the table,
 * its sequence, the chaining trigger, the triggers that refuse UPDATE, DELETE and TRUNCATE, and
 * the privileges: nothing for PUBLIC, SELECT and INSERT of the content columns for `systemRole`.
 * Statements are separated by drizzle's `--> statement-breakpoint`.
 */
export function auditTrailSql (options: AuditTrailSqlOptions): string {
  const system = roleName('auditTrailSql', 'systemRole', options.systemRole)
  const t = tableName('auditTable', options.auditTable, DEFAULT_AUDIT_TABLE)
  // The hash covers every column but itself, as jsonb text: one canonical spelling (keys sorted,
  // no insignificant spaces), with timestamps in UTC whatever the session's TimeZone.
  const statements = [
    `CREATE SEQUENCE ${t.derived('seq')} AS bigint;`,
    `CREATE TABLE ${t.sql} (
  seq bigint PRIMARY KEY,
  occurred_at timestamptz NOT NULL,
  event text NOT NULL CHECK (event ~ '^[a-z_]+\\.[a-z_]+$'),
  actor text NOT NULL CHECK (length(actor) BETWEEN 1 AND ${MAX_ACTOR_LENGTH}),
  reason text CHECK (length(reason) BETWEEN 1 AND ${MAX_REASON_LENGTH}),
  tenant_id text CHECK (length(tenant_id) BETWEEN 1 AND 64),
  grant_id uuid,
  detail jsonb NOT NULL DEFAULT '{}',
  prev_hash text NOT NULL,
  hash text NOT NULL
);`,
    `CREATE INDEX ${t.local('tenant_idx')} ON ${t.sql} (tenant_id, occurred_at);`,
    `CREATE FUNCTION ${t.derived('hash')} (entry ${t.sql}) RETURNS text LANGUAGE sql STABLE
  SET search_path TO pg_catalog, pg_temp SET "TimeZone" TO 'UTC'
  AS $$ SELECT encode(sha256(convert_to((to_jsonb(entry) - 'hash')::text, 'UTF8')), 'hex') $$;`,
    // SECURITY DEFINER: appending needs no SELECT on the trail and no use of its sequence. The
    // advisory lock (two-key form, apart from any single-key lock of the application) orders every
    // appender; the sequence number is drawn after it, so numbers follow the chain. Only READ
    // COMMITTED sees the row the previous lock holder committed: other levels are refused.
    `CREATE FUNCTION ${t.derived('chain')} () RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path TO pg_catalog, pg_temp
  AS $$
DECLARE
  previous text;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'fastify-tenant-rls: audit rows are appended in READ COMMITTED transactions only, not %', current_setting('transaction_isolation') USING ERRCODE = '25001';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('fastify-tenant-rls audit chain'), hashtext(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME));
  SELECT a.hash INTO previous FROM ${t.sql} a ORDER BY a.seq DESC LIMIT 1;
  NEW.prev_hash := coalesce(previous, '${GENESIS}');
  NEW.seq := nextval('${t.derived('seq').replaceAll("'", "''")}');
  NEW.occurred_at := clock_timestamp();
  NEW.hash := ${t.derived('hash')}(NEW);
  RETURN NEW;
END
$$;`,
    `CREATE FUNCTION ${t.derived('refuse_change')} () RETURNS trigger LANGUAGE plpgsql
  SET search_path TO pg_catalog, pg_temp
  AS $$
BEGIN
  RAISE EXCEPTION 'fastify-tenant-rls: the audit trail %.% is append-only; % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = '42501';
END
$$;`,
    `CREATE TRIGGER ${t.local('chain')} BEFORE INSERT ON ${t.sql} FOR EACH ROW EXECUTE FUNCTION ${t.derived('chain')}();`,
    `CREATE TRIGGER ${t.local('append_only')} BEFORE UPDATE OR DELETE ON ${t.sql} FOR EACH ROW EXECUTE FUNCTION ${t.derived('refuse_change')}();`,
    `CREATE TRIGGER ${t.local('no_truncate')} BEFORE TRUNCATE ON ${t.sql} FOR EACH STATEMENT EXECUTE FUNCTION ${t.derived('refuse_change')}();`,
    // Tenant ids, but no tenant's data: exports, erasures (it is append-only), the isolation kit and
    // the tenant-table audit leave it alone (tenant-catalog.ts).
    `COMMENT ON TABLE ${t.sql} IS '${LIBRARY_TABLE_COMMENT}: the audit trail of elevated access';`,
    `REVOKE ALL ON TABLE ${t.sql} FROM PUBLIC;`,
    `REVOKE ALL ON SEQUENCE ${t.derived('seq')} FROM PUBLIC;`,
    `REVOKE ALL ON FUNCTION ${t.derived('chain')}() FROM PUBLIC;`,
    `GRANT SELECT, INSERT (event, actor, reason, tenant_id, grant_id, detail) ON TABLE ${t.sql} TO ${system};`
  ]
  const header = `-- auditTrailSql (fastify-tenant-rls/elevated): the audit trail ${t.text}, run as its owner\n`
  return header + statements.join('\n--> statement-breakpoint\n') + '\n'
}

/** The statement that appends one row; parameters: event, actor, reason, tenant id, grant id, detail. */
export function appendAuditSql (table: TableName): string {
  return `INSERT INTO ${table.sql} (event, actor, reason, tenant_id, grant_id, detail) VALUES ($1, $2, $3, $4, $5, $6)`
}

/** One place in the chain: the sequence number and hash of a row. */
export interface AuditAnchor {
  seq: string
  hash: string
}

/** A row that breaks the chain. */
export interface AuditChainProblem {
  seq: string
  problem: string
}

/** What `verifyAuditChain` found. */
export interface AuditChainReport {
  /** True when every row's hash matches its content and links to the row before it (and the anchor, if given, is found). */
  ok: boolean
  rows: number
  /** The last row: keep it outside the database and pass it as `anchor` next time. Null for an empty trail. */
  head: AuditAnchor | null
  problems: AuditChainProblem[]
}

/** Options of `verifyAuditChain`. */
export interface VerifyAuditChainOptions {
  auditTable?: string
  /** A head returned by an earlier verification: the row must still be there with that hash. Null: none (an empty trail's head). */
  anchor?: AuditAnchor | null
}

const PAGE = 1000

interface ChainRow { seq: string, prev_hash: string, hash: string, canonical: string }

/**
 * Recomputes the whole chain, page by page in one snapshot. Each hash is recomputed here (SHA-256
 * of the row's canonical jsonb text), not by the database's hash function, which whoever could edit
 * the rows could also replace. Needs SELECT on the trail (the system pool has it).
 */
export async function verifyAuditChain (pool: Pool, options: VerifyAuditChainOptions = {}): Promise<AuditChainReport> {
  const t = tableName('auditTable', options.auditTable, DEFAULT_AUDIT_TABLE)
  const anchor = options.anchor ?? undefined
  if (anchor !== undefined && (typeof anchor.seq !== 'string' || typeof anchor.hash !== 'string')) failOption('anchor must be { seq, hash } as returned in an earlier report\'s head')
  const client = await pool.connect()
  const problems: AuditChainProblem[] = []
  let rows = 0
  let head: AuditAnchor | null = null
  let anchorSeen = false
  let healthy = false
  try {
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL \"TimeZone\" TO 'UTC'")
    let previous = GENESIS
    let after = '0'
    for (;;) {
      const { rows: page } = await client.query<ChainRow>(
        `SELECT a.seq::text AS seq, a.prev_hash, a.hash, (pg_catalog.to_jsonb(a) OPERATOR(pg_catalog.-) 'hash')::text AS canonical
           FROM ${t.sql} a WHERE a.seq > $1::bigint ORDER BY a.seq LIMIT ${PAGE}`, [after])
      for (const row of page) {
        rows++
        if (createHash('sha256').update(row.canonical, 'utf8').digest('hex') !== row.hash) {
          problems.push({ seq: row.seq, problem: 'its hash does not match its content: the row was modified' })
        }
        if (row.prev_hash !== previous) {
          problems.push({ seq: row.seq, problem: 'it is not chained to the row before it: a row before it was deleted, inserted or modified' })
        }
        if (row.seq === anchor?.seq) {
          anchorSeen = true
          if (row.hash !== anchor.hash) problems.push({ seq: row.seq, problem: 'the anchor row has another hash than when it was anchored: the chain was rewritten' })
        }
        previous = row.hash
        head = { seq: row.seq, hash: row.hash }
      }
      if (page.length < PAGE) break
      after = head?.seq ?? after
    }
    await client.query('COMMIT')
    healthy = true
  } finally {
    client.release(!healthy)
  }
  if (anchor !== undefined && !anchorSeen) problems.push({ seq: anchor.seq, problem: 'the anchor row is missing: rows were deleted from the end of the trail' })
  return { ok: problems.length === 0, rows, head, problems }
}

/** One elevated access in a report. */
export interface AccessReportEntry {
  seq: string
  at: Date
  event: string
  actor: string
  reason: string | null
  /** The tenant, or null for a system job, which may reach every tenant. */
  tenantId: string | null
  grantId: string | null
  detail: Record<string, unknown>
}

/** Options of `accessReport`. */
export interface AccessReportOptions {
  /** Start of the period, included. */
  from: Date
  /** End of the period, excluded. */
  to: Date
  auditTable?: string
  /** Type of tenant ids, as the plugin's option. Default `'uuid'`. */
  tenantIdType?: TenantIdType
}

function checkedDate (what: string, value: unknown): Date {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) failOption(`accessReport: ${what} must be a valid Date`)
  return value
}

/**
 * Every elevated access to one tenant in [from, to): its grants and break-glass events, and the
 * system jobs of the period (which reach every tenant), oldest first. The report a customer's
 * compliance team asks for. Needs SELECT on the trail (the system pool has it).
 */
export async function accessReport (pool: Pool, tenantId: string, options: AccessReportOptions): Promise<AccessReportEntry[]> {
  const t = tableName('auditTable', options?.auditTable, DEFAULT_AUDIT_TABLE)
  const tenant = normalizeTenantId(tenantId, validateTenantIdType(options?.tenantIdType))
  if (tenant === null) throw new TenantInvalidError()
  const from = checkedDate('from', options?.from)
  const to = checkedDate('to', options?.to)
  if (!(from < to)) failOption('accessReport: from must be before to')
  const { rows } = await pool.query<AccessReportEntry>(
    // Ordered by the column, not by the text alias of the same name.
    `SELECT a.seq::text AS seq, a.occurred_at AS at, a.event, a.actor, a.reason, a.tenant_id AS "tenantId", a.grant_id AS "grantId", a.detail
       FROM ${t.sql} a
      WHERE (a.tenant_id = $1 OR (a.tenant_id IS NULL AND a.event LIKE 'system\\_job.%'))
        AND a.occurred_at >= $2 AND a.occurred_at < $3
      ORDER BY a.seq`, [tenant, from, to])
  return rows
}
