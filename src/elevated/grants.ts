// Support access grants: who (operator) may act as which tenant, why, approved by whom, until when,
// and whether writes are allowed; break-glass grants are the approver-less emergency kind. The API
// writes through the system pool, not through a SECURITY DEFINER function the app role could call:
// every route runs as the app role and can send any SQL, so a function it may call is a function a
// hostile tenant's route may call, naming any approver it likes. Grants are written by whoever
// holds the system pool (a back-office service, a CLI an administrator runs), which the app role can
// never reach (system-role.ts). The app role may only read grants of the tenant its transaction is
// for (the admission query, admission.ts). Each change and its audit row are one statement, so
// neither can exist without the other.
import type { Pool } from 'pg'
import { failOption, GrantNotFoundError, GrantStateError, InvalidGrantError } from '../errors.js'
import { DEFAULT_SETTING, validateSetting } from '../options.js'
import { CURRENT_TENANT_FUNCTION } from '../signed-context/schema-sql.js'
import { LIBRARY_TABLE_COMMENT } from '../tenant-catalog.js'
import { normalizeTenantId, validateTenantIdType } from '../tenant-id.js'
import type { TenantIdType } from '../tenant-id.js'
import { accountableText, MAX_ACTOR_LENGTH, MAX_REASON_LENGTH } from './accountability.js'
import type { AuditEvent } from './audit-trail.js'
import { elevatedTables, roleName, tableName, DEFAULT_GRANTS_TABLE } from './tables.js'
import type { ElevatedTables } from './tables.js'

/** Default and maximum lifetime of a support grant, in minutes. */
export const DEFAULT_GRANT_MINUTES = 60
/** Default and maximum lifetime of a break-glass grant, in minutes. */
export const DEFAULT_BREAK_GLASS_MINUTES = 15
/** No option can raise a lifetime beyond a day: a longer need is a role, not a grant. */
const LIFETIME_CEILING = 24 * 60

/** Options of `grantsTableSql`. */
export interface GrantsTableSqlOptions {
  /** The application role: it may read the grants of its transaction's tenant, nothing else. */
  appRole: string
  /** The system pool's role: it creates, revokes and reviews grants. */
  systemRole: string
  grantsTable?: string
  /** The tenant setting the policies read, as the plugin's option. Default `'app.current_tenant_id'`. */
  setting?: string
  /**
   * The app runs in signed mode (the plugin's `signedContext`): the read policy takes the tenant
   * from `tenant_rls.current_tenant()`, as the tenant tables' policies do, so route SQL that sets
   * the tenant setting itself cannot read another tenant's grants (and the plugin's signed-mode
   * check, which refuses a policy reading the setting, passes). `setting` is then not used.
   */
  signedContext?: boolean
}

/**
 * The DDL of the grants table, for a migration run by the table owner. Rules the API checks are
 * also constraints, so a direct INSERT by the system role cannot skip them: an approver other than
 * the operator (compared case-insensitively), none for break-glass, expiry after creation, a review
 * only of break-glass and by someone else. A trigger keeps revocations and reviews final. The app
 * role reads under a FORCE'd policy on its transaction's tenant; tenant ids are stored as the
 * canonical text the plugin sets, whatever their type.
 */
export function grantsTableSql (options: GrantsTableSqlOptions): string {
  const app = roleName('grantsTableSql', 'appRole', options.appRole)
  const system = roleName('grantsTableSql', 'systemRole', options.systemRole)
  const setting = validateSetting(options.setting ?? DEFAULT_SETTING)
  // Grants store the tenant as the canonical text the function returns: compared uncast.
  const tenant = options.signedContext === true ? CURRENT_TENANT_FUNCTION : `nullif(current_setting('${setting}', true), '')`
  const t = tableName('grantsTable', options.grantsTable, DEFAULT_GRANTS_TABLE)
  const statements = [
    `CREATE TABLE ${t.sql} (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id text NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 64),
  operator text NOT NULL CHECK (length(operator) BETWEEN 1 AND ${MAX_ACTOR_LENGTH}),
  approver text CHECK (length(approver) BETWEEN 1 AND ${MAX_ACTOR_LENGTH}),
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND ${MAX_REASON_LENGTH}),
  write boolean NOT NULL DEFAULT false,
  break_glass boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT statement_timestamp(),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  revoked_by text CHECK (length(revoked_by) BETWEEN 1 AND ${MAX_ACTOR_LENGTH}),
  reviewed_at timestamptz,
  reviewed_by text CHECK (length(reviewed_by) BETWEEN 1 AND ${MAX_ACTOR_LENGTH}),
  CONSTRAINT ${t.local('expiry')} CHECK (expires_at > created_at),
  CONSTRAINT ${t.local('approval')} CHECK (break_glass = (approver IS NULL)),
  CONSTRAINT ${t.local('four_eyes')} CHECK (lower(approver) <> lower(operator)),
  CONSTRAINT ${t.local('revocation')} CHECK ((revoked_at IS NULL) = (revoked_by IS NULL)),
  CONSTRAINT ${t.local('review')} CHECK ((reviewed_at IS NULL) = (reviewed_by IS NULL) AND (reviewed_at IS NULL OR break_glass) AND lower(reviewed_by) <> lower(operator))
);`,
    `CREATE INDEX ${t.local('admission_idx')} ON ${t.sql} (tenant_id, operator, expires_at) WHERE revoked_at IS NULL;`,
    `CREATE FUNCTION ${t.derived('final')} () RETURNS trigger LANGUAGE plpgsql
  SET search_path TO pg_catalog, pg_temp
  AS $$
BEGIN
  IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at, NEW.revoked_by) IS DISTINCT FROM (OLD.revoked_at, OLD.revoked_by) THEN
    RAISE EXCEPTION 'fastify-tenant-rls: grant % is already revoked', OLD.id USING ERRCODE = '42501';
  END IF;
  IF OLD.reviewed_at IS NOT NULL AND (NEW.reviewed_at, NEW.reviewed_by) IS DISTINCT FROM (OLD.reviewed_at, OLD.reviewed_by) THEN
    RAISE EXCEPTION 'fastify-tenant-rls: grant % is already reviewed', OLD.id USING ERRCODE = '42501';
  END IF;
  RETURN NEW;
END
$$;`,
    `CREATE TRIGGER ${t.local('final')} BEFORE UPDATE ON ${t.sql} FOR EACH ROW EXECUTE FUNCTION ${t.derived('final')}();`,
    `ALTER TABLE ${t.sql} ENABLE ROW LEVEL SECURITY;`,
    `ALTER TABLE ${t.sql} FORCE ROW LEVEL SECURITY;`,
    `CREATE POLICY ${t.local('tenant_read')} ON ${t.sql} FOR SELECT TO ${app} USING (tenant_id = (SELECT ${tenant}));`,
    // Tenant ids, but no tenant's data: exports, erasures, the isolation kit and the tenant-table
    // audit leave it alone (tenant-catalog.ts).
    `COMMENT ON TABLE ${t.sql} IS '${LIBRARY_TABLE_COMMENT}: support access grants';`,
    `REVOKE ALL ON TABLE ${t.sql} FROM PUBLIC;`,
    `GRANT SELECT ON TABLE ${t.sql} TO ${app};`,
    `GRANT SELECT, INSERT (tenant_id, operator, approver, reason, write, break_glass, expires_at) ON TABLE ${t.sql} TO ${system};`,
    `GRANT UPDATE (revoked_at, revoked_by, reviewed_at, reviewed_by) ON TABLE ${t.sql} TO ${system};`
  ]
  const header = `-- grantsTableSql (fastify-tenant-rls/elevated): the support grants ${t.text}, run as its owner\n`
  return header + statements.join('\n--> statement-breakpoint\n') + '\n'
}

/** A support or break-glass grant as stored. */
export interface Grant {
  id: string
  tenantId: string
  operator: string
  /** Null for break-glass. */
  approver: string | null
  reason: string
  write: boolean
  breakGlass: boolean
  createdAt: Date
  expiresAt: Date
  revokedAt: Date | null
  revokedBy: string | null
  reviewedAt: Date | null
  reviewedBy: string | null
}

/** Where the tables are, and how tenant ids look; shared by every grant call. */
export interface GrantApiOptions extends ElevatedTables {
  /** Type of tenant ids, as the plugin's option. Default `'uuid'`. */
  tenantIdType?: TenantIdType
}

/** What `createGrant` needs. */
export interface GrantRequest {
  /** The support operator who will act as the tenant (the token's actor claim). */
  operator: string
  tenantId: string
  reason: string
  /** Who approved it: anyone but the operator. */
  approver: string
  /** Lifetime in minutes. Default and maximum: `maxMinutes`. */
  minutes?: number
  /** Allow writes; otherwise impersonated requests are READ ONLY. Default false. */
  write?: boolean
}

/** What `openBreakGlass` needs: no approver; the reason is all the justification there is. */
export type BreakGlassRequest = Omit<GrantRequest, 'approver'>

const GRANT_COLUMNS = `id, tenant_id AS "tenantId", operator, approver, reason, write, break_glass AS "breakGlass", created_at AS "createdAt",
  expires_at AS "expiresAt", revoked_at AS "revokedAt", revoked_by AS "revokedBy", reviewed_at AS "reviewedAt", reviewed_by AS "reviewedBy"`

function checkedMinutes (what: string, value: unknown, fallback: number): number {
  const minutes = value ?? fallback
  if (typeof minutes !== 'number' || !Number.isInteger(minutes) || minutes < 1 || minutes > LIFETIME_CEILING) {
    failOption(`${what} must be a whole number of minutes from 1 to ${LIFETIME_CEILING}, got ${JSON.stringify(minutes)}`)
  }
  return minutes
}

function checkedTenant (tenantId: unknown, type: unknown): string {
  const tenant = normalizeTenantId(tenantId, validateTenantIdType(type))
  if (tenant === null) throw new InvalidGrantError(`tenantId ${JSON.stringify(tenantId)} is not a tenant id in its canonical form`)
  return tenant
}

// Every check before anything is sent: a refused grant takes no connection.
function checkedRequest (request: unknown, breakGlass: boolean, maxMinutes: number, options: GrantApiOptions | undefined) {
  if (request === null || typeof request !== 'object') throw new InvalidGrantError('pass { operator, tenantId, reason, ... }')
  const given = request as Record<string, unknown>
  const operator = accountableText('operator', given.operator, MAX_ACTOR_LENGTH, 'support:alice@example.com')
  const approver = breakGlass ? null : accountableText('approver', given.approver, MAX_ACTOR_LENGTH, 'support-lead:bob@example.com')
  if (approver !== null && approver.toLowerCase() === operator.toLowerCase()) {
    throw new InvalidGrantError('the approver must be someone other than the operator')
  }
  const reason = accountableText('reason', given.reason, MAX_REASON_LENGTH, 'ticket #4711: customer cannot see their invoices')
  const minutes = given.minutes ?? maxMinutes
  if (typeof minutes !== 'number' || !Number.isInteger(minutes) || minutes < 1 || minutes > maxMinutes) {
    throw new InvalidGrantError(`minutes must be a whole number from 1 to ${maxMinutes} (the maximum lifetime of a ${breakGlass ? 'break-glass ' : ''}grant), got ${JSON.stringify(minutes)}`)
  }
  if (given.write !== undefined && typeof given.write !== 'boolean') throw new InvalidGrantError('write must be true or false')
  return { operator, approver, reason, minutes, write: given.write === true, tenant: checkedTenant(given.tenantId, options?.tenantIdType) }
}

// The change and its audit row in one statement: both or neither. `event` is one of a fixed set
// of literals; the other pieces are column references and parameters, never values.
function withAudit (change: string, event: AuditEvent, actorSql: string, reasonSql: string, detailSql: string, options: ElevatedTables | undefined): string {
  const { audit } = elevatedTables(options)
  return `WITH g AS (${change} RETURNING ${GRANT_COLUMNS}),
  audited AS (INSERT INTO ${audit.sql} (event, actor, reason, tenant_id, grant_id, detail) SELECT '${event}', ${actorSql}, ${reasonSql}, g."tenantId", g.id, ${detailSql} FROM g)
SELECT * FROM g`
}

async function insertGrant (systemPool: Pool, request: ReturnType<typeof checkedRequest>, breakGlass: boolean, options: GrantApiOptions | undefined): Promise<Grant> {
  const { grants } = elevatedTables(options)
  const change = `INSERT INTO ${grants.sql} (tenant_id, operator, approver, reason, write, break_glass, expires_at)
    VALUES ($1, $2, $3, $4, $5, ${breakGlass}, pg_catalog.statement_timestamp() + pg_catalog.make_interval(mins => $6))`
  const detail = 'pg_catalog.jsonb_build_object(\'operator\', g.operator, \'approver\', g.approver, \'write\', g.write, \'breakGlass\', g."breakGlass", \'expiresAt\', g."expiresAt")'
  const text = withAudit(change, breakGlass ? 'break_glass.opened' : 'grant.created', breakGlass ? 'g.operator' : 'g.approver', 'g.reason', detail, options)
  const { rows: [grant] } = await systemPool.query<Grant>(text, [request.tenant, request.operator, request.approver, request.reason, request.write, request.minutes])
  return grant as Grant
}

/** Options of `createGrant`. */
export interface CreateGrantOptions extends GrantApiOptions {
  /** Longest lifetime a grant may ask for, in minutes. Default 60. */
  maxMinutes?: number
}

/**
 * Grants `operator` support access to one tenant until `minutes` from now (at most `maxMinutes`),
 * read-only unless `write`. Refuses (FST_TENANT_RLS_INVALID_GRANT, nothing sent) an approver who is
 * the operator, a longer lifetime, a malformed tenant; missing or unbounded names and reasons get
 * FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED. Writes the grant and its audit row (`grant.created`, by
 * the approver) in one statement on the system pool.
 */
export async function createGrant (systemPool: Pool, request: GrantRequest, options?: CreateGrantOptions): Promise<Grant> {
  const maxMinutes = checkedMinutes('maxMinutes', options?.maxMinutes, DEFAULT_GRANT_MINUTES)
  return insertGrant(systemPool, checkedRequest(request, false, maxMinutes, options), false, options)
}

/** Options of `openBreakGlass`. */
export interface BreakGlassOptions extends GrantApiOptions {
  /** Longest lifetime a break-glass grant may ask for, in minutes. Default 15. */
  maxMinutes?: number
}

/**
 * Opens an emergency grant without an approver: the reason is required, the lifetime short (at most
 * `maxMinutes`, default 15), and the grant stays unreviewed until someone other than the operator
 * calls `reviewBreakGlass`. Recorded as `break_glass.opened`, by the operator.
 */
export async function openBreakGlass (systemPool: Pool, request: BreakGlassRequest, options?: BreakGlassOptions): Promise<Grant> {
  const maxMinutes = checkedMinutes('maxMinutes', options?.maxMinutes, DEFAULT_BREAK_GLASS_MINUTES)
  return insertGrant(systemPool, checkedRequest(request, true, maxMinutes, options), true, options)
}

// After an UPDATE matched nothing: say why, in the words of the grant's state.
async function refusal (systemPool: Pool, grantId: string, options: GrantApiOptions | undefined, why: (grant: Grant) => string): Promise<never> {
  const { grants } = elevatedTables(options)
  const { rows: [grant] } = await systemPool.query<Grant>(`SELECT ${GRANT_COLUMNS} FROM ${grants.sql} WHERE id = $1`, [grantId])
  if (grant === undefined) throw new GrantNotFoundError(grantId)
  throw new GrantStateError(`${grantId} ${why(grant)}; nothing was changed`)
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

function checkedGrantId (grantId: unknown): string {
  if (typeof grantId !== 'string' || !UUID.test(grantId)) throw new InvalidGrantError(`grant ids are lower-case UUIDs, got ${JSON.stringify(grantId)}`)
  return grantId
}

/** Who revokes or reviews, and why. */
export interface GrantDecision {
  by: string
  reason: string
}

/**
 * Revokes a grant now: the very next request of its operator is refused. Recorded as
 * `grant.revoked`. An unknown grant is FST_TENANT_RLS_GRANT_NOT_FOUND, a revoked one
 * FST_TENANT_RLS_GRANT_STATE. An expired grant can still be revoked (the record says who ended it).
 */
export async function revokeGrant (systemPool: Pool, grantId: string, decision: GrantDecision, options?: GrantApiOptions): Promise<Grant> {
  const id = checkedGrantId(grantId)
  const by = accountableText('by', decision?.by, MAX_ACTOR_LENGTH, 'support-lead:bob@example.com')
  const reason = accountableText('reason', decision?.reason, MAX_REASON_LENGTH, 'ticket #4711 solved')
  const { grants } = elevatedTables(options)
  const change = `UPDATE ${grants.sql} SET revoked_at = pg_catalog.statement_timestamp(), revoked_by = $2 WHERE id = $1 AND revoked_at IS NULL`
  const { rows: [grant] } = await systemPool.query<Grant>(withAudit(change, 'grant.revoked', '$2::text', '$3::text', "pg_catalog.jsonb_build_object('breakGlass', g.\"breakGlass\")", options), [id, by, reason])
  return grant ?? refusal(systemPool, id, options, () => 'is already revoked')
}

/**
 * Records the review of a break-glass grant by someone other than its operator (`note`: what they
 * checked, what they found). Recorded as `break_glass.reviewed`. Reviewing a support grant, one
 * reviewed already, or one's own is refused with FST_TENANT_RLS_GRANT_STATE or _INVALID_GRANT.
 */
export async function reviewBreakGlass (systemPool: Pool, grantId: string, review: { reviewer: string, note: string }, options?: GrantApiOptions): Promise<Grant> {
  const id = checkedGrantId(grantId)
  const reviewer = accountableText('reviewer', review?.reviewer, MAX_ACTOR_LENGTH, 'security:carol@example.com')
  const note = accountableText('note', review?.note, MAX_REASON_LENGTH, 'checked the statements run; all related to incident #12')
  const { grants } = elevatedTables(options)
  const change = `UPDATE ${grants.sql} SET reviewed_at = pg_catalog.statement_timestamp(), reviewed_by = $2
    WHERE id = $1 AND break_glass AND reviewed_at IS NULL AND pg_catalog.lower(operator) <> pg_catalog.lower($2)`
  const { rows: [grant] } = await systemPool.query<Grant>(withAudit(change, 'break_glass.reviewed', '$2::text', '$3::text', "'{}'::jsonb", options), [id, reviewer, note])
  if (grant !== undefined) return grant
  return refusal(systemPool, id, options, (found) => {
    if (!found.breakGlass) return 'is a support grant, approved when it was created; only break-glass grants are reviewed'
    if (found.reviewedAt !== null) return `was reviewed already by ${String(found.reviewedBy)}`
    throw new InvalidGrantError(`the reviewer of break-glass grant ${id} must be someone other than its operator`)
  })
}

/** Filters of `listGrants`; all optional, combined with AND. */
export interface GrantFilter extends GrantApiOptions {
  tenantId?: string
  /** Only grants that admit requests now (unrevoked, unexpired). */
  live?: boolean
  /** Only break-glass grants nobody has reviewed yet. */
  unreviewed?: boolean
}

/** Grants, newest first: the review queue (`{ unreviewed: true }`), a tenant's live access (`{ tenantId, live: true }`). */
export async function listGrants (systemPool: Pool, filter: GrantFilter = {}): Promise<Grant[]> {
  const { grants } = elevatedTables(filter)
  const tenant = filter.tenantId === undefined ? null : checkedTenant(filter.tenantId, filter.tenantIdType)
  const { rows } = await systemPool.query<Grant>(
    `SELECT ${GRANT_COLUMNS} FROM ${grants.sql}
      WHERE ($1::text IS NULL OR tenant_id = $1)
        AND (NOT $2 OR (revoked_at IS NULL AND expires_at > pg_catalog.statement_timestamp()))
        AND (NOT $3 OR (break_glass AND reviewed_at IS NULL))
      ORDER BY created_at DESC, id`, [tenant, filter.live === true, filter.unreviewed === true])
  return rows
}
