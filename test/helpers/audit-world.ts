// Audit fixtures: each in its own schema with its own application role, on one test database, so
// a fixture's objects and grants never reach another's audit. Every schema starts from the clean
// baseline (a tenants table and a tenant table that passes every rule); a fixture then breaks
// exactly one thing. Roles are cluster-wide: they are dropped when the test file ends.
import { randomBytes } from 'node:crypto'
import type { Test } from 'tap'
import { auditDatabase } from 'fastify-tenant-rls/audit'
import type { AuditOptions, AuditReport } from 'fastify-tenant-rls/audit'
import { createTestDatabase } from './database.js'
import type { TestDatabase } from './database.js'

export const TENANT = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"

export interface AuditFixture {
  schema: string
  role: string
  audit (options?: Partial<AuditOptions>): Promise<AuditReport>
}

export interface AuditWorld {
  db: TestDatabase
  /** A role created for this file (dropped at the end). */
  role (name: string, attributes?: string): Promise<string>
  /**
   * A schema with the clean baseline, then `sql` run as the superuser; `%S` is the schema, `%R` the
   * fixture's application role, `%O` the owner role.
   */
  fixture (name: string, sql?: string, options?: { owner?: boolean }): Promise<AuditFixture>
}

/** The clean baseline of every fixture schema, run as the owner role. */
export function baselineSql (schema: string, role: string): string {
  return `
    CREATE TABLE ${schema}.tenants (id uuid PRIMARY KEY);
    CREATE TABLE ${schema}.items (
      tenant_id uuid NOT NULL REFERENCES ${schema}.tenants (id) ON DELETE CASCADE,
      id uuid NOT NULL DEFAULT gen_random_uuid(),
      name text NOT NULL,
      PRIMARY KEY (tenant_id, id),
      UNIQUE (tenant_id, name)
    );
    ALTER TABLE ${schema}.items ENABLE ROW LEVEL SECURITY;
    ALTER TABLE ${schema}.items FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON ${schema}.items USING (tenant_id = ${TENANT}) WITH CHECK (tenant_id = ${TENANT});
    GRANT SELECT, INSERT, UPDATE, DELETE ON ${schema}.items TO ${role};`
}

export async function createAuditWorld (t: Test): Promise<AuditWorld> {
  const db = await createTestDatabase(t)
  const prefix = `audit_${randomBytes(3).toString('hex')}`
  const roles: string[] = []
  // Runs before the database is dropped (teardowns run last-registered first).
  t.teardown(async () => {
    for (const role of roles.reverse()) {
      await db.admin.query(`DROP OWNED BY ${role} CASCADE; DROP ROLE ${role}`)
    }
  })
  const world: AuditWorld = {
    db,
    async role (name, attributes = 'NOLOGIN NOSUPERUSER NOBYPASSRLS') {
      const role = `${prefix}_${name}`
      await db.admin.query(`CREATE ROLE ${role} ${attributes}`)
      roles.push(role)
      return role
    },
    async fixture (name, sql = '', options = {}) {
      const schema = `fx_${name.replaceAll('-', '_')}`
      const role = await world.role(name.replaceAll('-', '_'))
      await db.admin.query(`CREATE SCHEMA ${schema} AUTHORIZATION ${db.ownerRole}; GRANT USAGE ON SCHEMA ${schema} TO ${role}`)
      await db.asOwner(baselineSql(schema, role))
      const filled = sql.replaceAll('%S', schema).replaceAll('%R', role).replaceAll('%O', db.ownerRole)
      if (options.owner === true) await db.asOwner(filled)
      else if (filled.trim() !== '') await db.admin.query(filled)
      return { schema, role, audit: (extra = {}) => auditDatabase(db.admin, { appRole: role, schema, ...extra }) }
    }
  }
  return world
}

/** The distinct rule ids of a report, sorted. */
export const ruleIds = (report: AuditReport): string[] => [...new Set(report.findings.map((entry) => entry.rule))].sort()
