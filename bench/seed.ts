// The benchmark's data: one tenant table of 1,000,000 rows over 1,000 tenants, indexed on
// (tenant_id, created_at desc), RLS enabled and FORCE'd with the recommended policy. Two login
// roles read it: the app role (subject to RLS, what the plugin uses) and a manual role with
// BYPASSRLS, standing for an application that filters with WHERE tenant_id = $1 itself. A finished
// seed is recorded in bench_seed and reused; an unfinished or older one is dropped and rebuilt.
import pg from 'pg'
import { auditTrailSql, grantsTableSql, systemRoleSql } from 'fastify-tenant-rls/elevated'
import { installSigningKey, sharedRoleHardeningSql, sharedRoleSuperuserHardeningSql, signedContextSql, signedCurrentTenantSql } from 'fastify-tenant-rls/schema'
import type { SigningKey } from 'fastify-tenant-rls'
import { items } from './workloads.js'

export const DATABASE = 'tenant_rls_bench'
export const APP_ROLE = 'tenant_rls_bench_app'
export const MANUAL_ROLE = 'tenant_rls_bench_manual'
/** A second application role whose only policy on items is the signed one (signed tenant context). */
export const SIGNED_ROLE = 'tenant_rls_bench_signed'
/** The bench's signing key, installed by the seed; a benchmark secret, not one to reuse. */
export const BENCH_SIGNING_KEY: SigningKey = { id: 'bench', secret: 'benchmark-signing-key-not-a-secret-0123456789' }
/** The system pool's role (systemRoleSql), for the variant with elevated access configured. */
export const SYSTEM_ROLE = 'tenant_rls_bench_system'
const OWNER_ROLE = 'tenant_rls_bench_owner'
/** Password of the bench's login roles (a throwaway local database). */
export const PASSWORD = 'bench-password'
const SEED_VERSION = 4
export const ROWS = 1_000_000
export const TENANTS = 1_000
/** Title of the rows W2 inserts; deleted at the start of every run so reruns start equal. */
export const POSTED_TITLE = 'posted by the benchmark'
export const TENANT_INDEX = 'items_tenant_created_idx'

export interface Seeded {
  /** Superuser connection on the bench database (setup and cleanup only). */
  adminUrl: string
  appUrl: string
  manualUrl: string
  signedUrl: string
  systemUrl: string
  tenants: string[]
  /** Seconds spent seeding in this run; 0 when an earlier seed was reused. */
  seedSeconds: number
}

const POLICY = "tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
const SIGNED_POLICY = `tenant_id = (SELECT ${signedCurrentTenantSql()})`

/** `url` pointed at `database`, as `role` (with the bench's password) when given. */
export function withDatabase (url: string, database: string, role?: string): string {
  const target = new URL(url)
  target.pathname = `/${database}`
  if (role !== undefined) {
    target.username = role
    target.password = PASSWORD
  }
  return target.toString()
}

async function seedVersion (serverUrl: string): Promise<number | undefined> {
  const client = new pg.Client({ connectionString: withDatabase(serverUrl, DATABASE) })
  try {
    await client.connect()
    const { rows } = await client.query<{ version: number }>('SELECT version FROM bench_seed')
    return rows[0]?.version
  } catch {
    return undefined
  } finally {
    await client.end().catch(() => {})
  }
}

async function createDatabase (serverUrl: string): Promise<void> {
  const root = new pg.Client({ connectionString: serverUrl })
  await root.connect()
  try {
    await root.query(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
    for (const role of [APP_ROLE, MANUAL_ROLE, SIGNED_ROLE, SYSTEM_ROLE, OWNER_ROLE]) await root.query(`DROP ROLE IF EXISTS ${role}`)
    await root.query(`CREATE DATABASE ${DATABASE}`)
    await root.query(`CREATE ROLE ${OWNER_ROLE} NOLOGIN`)
    await root.query(`CREATE ROLE ${APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${PASSWORD}'`)
    await root.query(`CREATE ROLE ${MANUAL_ROLE} LOGIN NOSUPERUSER BYPASSRLS PASSWORD '${PASSWORD}'`)
    await root.query(`CREATE ROLE ${SIGNED_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${PASSWORD}'`)
  } finally {
    await root.end()
  }
}

async function fill (adminUrl: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(`
      GRANT CONNECT ON DATABASE ${DATABASE} TO ${APP_ROLE}, ${MANUAL_ROLE}, ${SIGNED_ROLE};
      GRANT USAGE, CREATE ON SCHEMA public TO ${OWNER_ROLE};
      GRANT CREATE ON DATABASE ${DATABASE} TO ${OWNER_ROLE};
      SET ROLE ${OWNER_ROLE};
      ${signedContextSql({ role: SIGNED_ROLE, owner: OWNER_ROLE })}
      SET ROLE ${OWNER_ROLE};
      CREATE TABLE tenants (id uuid PRIMARY KEY);
      INSERT INTO tenants SELECT md5('bench-tenant-' || n)::uuid FROM generate_series(0, ${TENANTS - 1}) AS n;
      CREATE TABLE items (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id uuid NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        title text NOT NULL,
        amount integer NOT NULL
      );
      -- Tenant of row g is g mod 1000: every tenant gets 1,000 rows spread over the whole timeline.
      INSERT INTO items (tenant_id, created_at, title, amount)
        SELECT md5('bench-tenant-' || (g % ${TENANTS}))::uuid, now() - g * interval '1 second', 'item ' || g, g % 997
        FROM generate_series(1, ${ROWS}) AS g;
      CREATE INDEX ${TENANT_INDEX} ON items (tenant_id, created_at DESC);
      ALTER TABLE items ENABLE ROW LEVEL SECURITY;
      ALTER TABLE items FORCE ROW LEVEL SECURITY;
      -- Each application role gets its own policy: the plain one for the app role, the signed one
      -- (the tenant through tenant_rls.current_tenant()) for the signed role; same table, same index.
      CREATE POLICY tenant_isolation ON items TO ${APP_ROLE} USING (${POLICY}) WITH CHECK (${POLICY});
      CREATE POLICY signed_isolation ON items TO ${SIGNED_ROLE} USING (${SIGNED_POLICY}) WITH CHECK (${SIGNED_POLICY});
      GRANT SELECT, INSERT ON items TO ${APP_ROLE}, ${MANUAL_ROLE}, ${SIGNED_ROLE};
      GRANT SELECT ON tenants TO ${APP_ROLE}, ${MANUAL_ROLE}, ${SIGNED_ROLE};
      RESET ROLE;
    `)
    await admin.query(`SET ROLE ${OWNER_ROLE}`)
    await installSigningKey(admin, BENCH_SIGNING_KEY)
    await admin.query('RESET ROLE')
    await admin.query('VACUUM ANALYZE items')
    await admin.query(`CREATE TABLE bench_seed (version int NOT NULL); INSERT INTO bench_seed VALUES (${SEED_VERSION})`)
  } finally {
    await admin.end()
  }
}

/**
 * The system role, the audit trail and the grants table, made with the package's own SQL as the
 * README says, when missing: on every run (not part of the seed's version), so a seed from before
 * them is completed without rebuilding the million rows. Only the variant with elevated access
 * configured uses them, and none of its requests does.
 */
async function ensureElevated (admin: pg.Client, serverUrl: string): Promise<void> {
  const root = new pg.Client({ connectionString: serverUrl })
  await root.connect()
  try {
    // Roles belong to the server, not to the database: created on the server's own database.
    await root.query(`DO $$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '${SYSTEM_ROLE}') THEN
        CREATE ROLE ${SYSTEM_ROLE} LOGIN PASSWORD '${PASSWORD}';
      END IF;
    END $$`)
  } finally {
    await root.end()
  }
  await admin.query(`${systemRoleSql({ items }, { role: SYSTEM_ROLE })}; GRANT CONNECT ON DATABASE ${DATABASE} TO ${SYSTEM_ROLE}`)
  const { rows: [tables] } = await admin.query<{ audit: boolean, grants: boolean }>(
    "SELECT to_regclass('public.tenant_rls_audit') IS NOT NULL AS audit, to_regclass('public.tenant_rls_grants') IS NOT NULL AS grants")
  await admin.query(`SET ROLE ${OWNER_ROLE}`)
  if (tables?.audit !== true) await admin.query(auditTrailSql({ systemRole: SYSTEM_ROLE }))
  if (tables?.grants !== true) await admin.query(grantsTableSql({ appRole: APP_ROLE, systemRole: SYSTEM_ROLE }))
  await admin.query('RESET ROLE')
}

/** Seeds the bench database unless a finished seed of this version is there; then tidies it up. */
export async function seed (serverUrl: string): Promise<Seeded> {
  const adminUrl = withDatabase(serverUrl, DATABASE)
  const started = process.hrtime.bigint()
  let seedSeconds = 0
  if (await seedVersion(serverUrl) !== SEED_VERSION) {
    await createDatabase(serverUrl)
    await fill(adminUrl)
    seedSeconds = Number(process.hrtime.bigint() - started) / 1e9
  }
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    // Hardened on every run, as the README says (idempotent): a seed from before the hardening, or
    // pg_stat_statements installed by an earlier run's profile, would otherwise fail the startup check.
    await admin.query(sharedRoleHardeningSql({ role: APP_ROLE, database: DATABASE }))
    await admin.query(sharedRoleHardeningSql({ role: SIGNED_ROLE, database: DATABASE }))
    await admin.query(sharedRoleSuperuserHardeningSql())
    await ensureElevated(admin, serverUrl)
    const removed = await admin.query('DELETE FROM items WHERE title = $1', [POSTED_TITLE])
    if ((removed.rowCount ?? 0) > 0) await admin.query('VACUUM ANALYZE items')
    const { rows } = await admin.query<{ id: string }>('SELECT id FROM tenants ORDER BY id')
    return {
      adminUrl,
      appUrl: withDatabase(serverUrl, DATABASE, APP_ROLE),
      manualUrl: withDatabase(serverUrl, DATABASE, MANUAL_ROLE),
      signedUrl: withDatabase(serverUrl, DATABASE, SIGNED_ROLE),
      systemUrl: withDatabase(serverUrl, DATABASE, SYSTEM_ROLE),
      tenants: rows.map((row) => row.id),
      seedSeconds
    }
  } finally {
    await admin.end()
  }
}
