// The lifecycle tests' tables: tenants, a parent (projects) and a child (a_tasks, named to sort
// before its parent, so only foreign-key order can put it second), with the column types whose
// text form is easy to get wrong (tabs, newlines, backslashes, NULL, unicode, arrays, jsonb, bytea,
// numeric, timestamptz), an identity column GENERATED ALWAYS and a generated column. FORCE'd RLS
// with USING and WITH CHECK on both tenant tables, and the app role's grants, as in production.
import { randomUUID } from 'node:crypto'
import type { TestDatabase } from './database.js'

const POLICY = "tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)"

export const LIFECYCLE_SCHEMA = `
  CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL);
  CREATE TABLE projects (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    notes text,
    budget numeric(12, 2),
    created_at timestamptz NOT NULL DEFAULT now(),
    tags text[],
    meta jsonb,
    blob bytea,
    name_length int GENERATED ALWAYS AS (length(name)) STORED,
    PRIMARY KEY (tenant_id, id)
  );
  CREATE TABLE a_tasks (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    project_id bigint NOT NULL,
    title varchar(40) NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
  );
`

/** Creates the lifecycle tables (as the owner) with their policies and grants. */
export async function createLifecycleTables (db: TestDatabase): Promise<void> {
  const tables = ['projects', 'a_tasks']
  await db.asOwner(LIFECYCLE_SCHEMA + tables.map((table) => `
    ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY;
    ALTER TABLE ${table} FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON ${table} USING (${POLICY}) WITH CHECK (${POLICY});
    GRANT SELECT, INSERT, UPDATE, DELETE ON ${table} TO ${db.appRole};
  `).join(''))
}

/** Inserts a tenants row (as the superuser: the app role has no privilege on tenants). */
export async function addTenant (db: TestDatabase, tenantId: string, name = 'tenant'): Promise<void> {
  await db.admin.query('INSERT INTO tenants (id, name) VALUES ($1, $2)', [tenantId, name])
}

/**
 * Seeds a tenant: the awkward rows, then `bulk` plain projects with two tasks each. Written by the
 * superuser, which RLS does not hold, so the seed does not depend on the code under test.
 */
export async function seedTenant (db: TestDatabase, tenantId: string, bulk: number): Promise<void> {
  await addTenant(db, tenantId)
  await db.admin.query(`
    INSERT INTO projects (tenant_id, name, notes, budget, created_at, tags, meta, blob) VALUES
      ($1, E'tab\\there', E'line\\nbreak \\\\ backslash\\r', 1234.50, '2026-01-02 03:04:05.678+02', '{a,"b c",NULL}', '{"k": "v\\n", "n": 1.5}', '\\x00ff5c0a'),
      ($1, 'Zürich ✓ \\N', NULL, NULL, '1999-12-31 23:59:59+00', '{}', 'null', ''),
      ($1, E'\\\\.', '', -0.01, now(), NULL, NULL, NULL)`, [tenantId])
  await db.admin.query(`
    INSERT INTO projects (tenant_id, name, budget) SELECT $1, 'bulk ' || i, i FROM generate_series(1, $2::int) AS i`, [tenantId, bulk])
  await db.admin.query(`
    INSERT INTO a_tasks (tenant_id, project_id, title)
    SELECT tenant_id, id, 'task ' || n || E' of\\t' || name FROM projects, generate_series(1, 2) AS n WHERE tenant_id = $1`, [tenantId])
}

/** Two seeded tenants: A with `bulk` plain projects, B with a few. */
export async function seedTwoTenants (db: TestDatabase, bulk: number): Promise<{ tenantA: string, tenantB: string }> {
  const tenantA = randomUUID()
  const tenantB = randomUUID()
  await seedTenant(db, tenantA, bulk)
  await seedTenant(db, tenantB, 3)
  return { tenantA, tenantB }
}

/** Every committed row of a tenant, table by table, as text (read by the superuser). */
export async function committedRows (db: TestDatabase, tenantId: string): Promise<Record<string, string[]>> {
  const rows: Record<string, string[]> = {}
  for (const table of ['tenants', 'projects', 'a_tasks']) {
    const column = table === 'tenants' ? 'id' : 'tenant_id'
    const result = await db.admin.query<{ row: string }>(`SELECT t::text AS row FROM ${table} t WHERE ${column} = $1 ORDER BY t::text`, [tenantId])
    rows[table] = result.rows.map(({ row }) => row)
  }
  return rows
}
