// The core tests' tenant table, its drizzle schema, two tenants, and an app factory.
import { randomUUID } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import { pgTable, text, uuid } from 'drizzle-orm/pg-core'
import Fastify from 'fastify'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import type pg from 'pg'
import type { Test } from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import type { FastifyTenantRlsSettings } from 'fastify-tenant-rls'
import { createTestDatabase } from './database.js'
import type { TestDatabase } from './database.js'

export const JWT_SECRET = 'a-test-secret-that-is-long-enough-for-hs256'

export const projects = pgTable('projects', {
  tenantId: uuid('tenant_id').notNull(),
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull()
})

export const schema = { projects }

const POLICY = "tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)"

/** Creates tenants + projects (FORCE'd RLS, USING and WITH CHECK) and seeds two tenants. */
export async function createProjectsTable (db: TestDatabase): Promise<{ tenantA: string, tenantB: string }> {
  await db.asOwner(`
    CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL);
    CREATE TABLE projects (
      tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      name text NOT NULL,
      CONSTRAINT projects_tenant_name_key UNIQUE (tenant_id, name) DEFERRABLE INITIALLY DEFERRED
    );
    CREATE INDEX projects_tenant_id_idx ON projects (tenant_id);
    ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
    ALTER TABLE projects FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON projects USING (${POLICY}) WITH CHECK (${POLICY});
    GRANT SELECT, INSERT, UPDATE, DELETE ON projects TO ${db.appRole};
  `)
  const tenantA = randomUUID()
  const tenantB = randomUUID()
  await db.admin.query("INSERT INTO tenants (id, name) VALUES ($1, 'A'), ($2, 'B')", [tenantA, tenantB])
  await db.admin.query("INSERT INTO projects (tenant_id, name) VALUES ($1, 'a-1'), ($1, 'a-2'), ($2, 'b-1')", [tenantA, tenantB])
  return { tenantA, tenantB }
}

/**
 * A test file's database with the projects table and its two tenants, and an app pool of `max`
 * connections; after every test, no leak and only the seed rows left.
 */
export async function projectsWorld (t: Test, max: number): Promise<{ db: TestDatabase, pool: pg.Pool, tenantA: string, tenantB: string }> {
  const db = await createTestDatabase(t)
  const { tenantA, tenantB } = await createProjectsTable(db)
  const pool = db.appPool({ max })
  t.afterEach(async (t) => {
    await db.assertNoLeaks(t, pool)
    await db.admin.query("DELETE FROM projects WHERE name NOT IN ('a-1', 'a-2', 'b-1')")
  })
  return { db, pool, tenantA, tenantB }
}

/** Committed rows of a tenant, read through the superuser connection (RLS does not apply to it). */
export async function committedNames (db: TestDatabase, tenantId: string): Promise<string[]> {
  const { rows } = await db.admin.query<{ name: string }>('SELECT name FROM projects WHERE tenant_id = $1 ORDER BY name', [tenantId])
  return rows.map((row) => row.name)
}

export interface AppSetup {
  pool: pg.Pool
  options?: Partial<FastifyTenantRlsSettings>
  fastify?: FastifyServerOptions
  routes?: (app: FastifyInstance) => void
}

/** A Fastify app with @fastify/jwt and the plugin, closed when the test ends. */
export async function buildApp (t: Test, setup: AppSetup): Promise<FastifyInstance> {
  const app = Fastify(setup.fastify ?? {})
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, { pool: setup.pool, schema, ...setup.options })
  setup.routes?.(app)
  t.teardown(() => app.close())
  await app.ready()
  return app
}

/** Authorization header for a token with the given claims (defaults sign with the test secret). */
export function bearer (app: FastifyInstance, claims: Record<string, unknown>, options: Record<string, unknown> = {}): { authorization: string } {
  return { authorization: `Bearer ${app.jwt.sign(claims, options)}` }
}
