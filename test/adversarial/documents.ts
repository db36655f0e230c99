// The attack suite's world: tenants whose rows deliberately clash on every natural key (each has
// documents INV-1 and INV-2 with the same slugs), a child table tied to its parent through a
// tenant-scoped foreign key, and the helpers every attack uses: an app with one route per attack,
// a call as a given tenant, and a snapshot of what was really committed (read as the superuser,
// which RLS does not filter).
import { randomUUID } from 'node:crypto'
import { pgTable, text, uuid } from 'drizzle-orm/pg-core'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { LightMyRequestResponse } from 'fastify'
import type pg from 'pg'
import type { Test } from 'tap'
import type { FastifyTenantRlsSettings } from 'fastify-tenant-rls'
import type { TestDatabase } from '../helpers/database.js'
import { bearer, buildApp } from '../helpers/fixture.js'
import { pluginOptionsFor } from './targets.js'

export const documents = pgTable('documents', {
  tenantId: uuid('tenant_id').notNull(),
  id: uuid('id').primaryKey().defaultRandom(),
  code: text('code').notNull(),
  slug: text('slug').notNull(),
  body: text('body').notNull()
})

export const notes = pgTable('notes', {
  tenantId: uuid('tenant_id').notNull(),
  id: uuid('id').primaryKey().defaultRandom(),
  documentId: uuid('document_id').notNull(),
  text: text('text').notNull()
})

export const documentSchema = { documents, notes }

const CURRENT_TENANT = "(SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)"

export interface DocumentRow { tenant_id: string, id: string, code: string, slug: string, body: string }

export interface World {
  /** Tenant ids; `tenants[0]` and `tenants[1]` are the usual A and B. */
  tenants: [string, string, ...string[]]
  /** `ids[tenant][code]`: the id of that tenant's document with that code. */
  ids: Record<string, Record<string, string>>
}

/**
 * Creates documents and notes (RLS enabled, FORCE'd, USING + WITH CHECK) and seeds `count`
 * tenants, each with INV-1 and INV-2 and one note on INV-1. The (tenant_id, code) key is what
 * ON CONFLICT aims at; the (tenant_id, slug) key is deferred, so a duplicate fails at COMMIT.
 */
export async function createWorld (db: TestDatabase, count = 2): Promise<World> {
  await db.asOwner(`
    CREATE TABLE documents (
      tenant_id uuid NOT NULL,
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      code text NOT NULL,
      slug text NOT NULL,
      body text NOT NULL,
      CONSTRAINT documents_code_key UNIQUE (tenant_id, code),
      CONSTRAINT documents_slug_key UNIQUE (tenant_id, slug) DEFERRABLE INITIALLY DEFERRED,
      CONSTRAINT documents_tenant_id_key UNIQUE (tenant_id, id)
    );
    CREATE TABLE notes (
      tenant_id uuid NOT NULL,
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      document_id uuid NOT NULL,
      text text NOT NULL,
      FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, id) ON DELETE CASCADE
    );
    ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
    ALTER TABLE documents FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON documents USING (tenant_id = ${CURRENT_TENANT}) WITH CHECK (tenant_id = ${CURRENT_TENANT});
    ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
    ALTER TABLE notes FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON notes USING (tenant_id = ${CURRENT_TENANT}) WITH CHECK (tenant_id = ${CURRENT_TENANT});
    GRANT SELECT, INSERT, UPDATE, DELETE ON documents, notes TO ${db.appRole};
  `)
  const tenants = [randomUUID(), randomUUID(), ...Array.from({ length: count - 2 }, () => randomUUID())] as World['tenants']
  const ids: World['ids'] = {}
  for (const [index, tenant] of tenants.entries()) {
    const { rows } = await db.admin.query<{ id: string, code: string }>(
      "INSERT INTO documents (tenant_id, code, slug, body) VALUES ($1, 'INV-1', 'first', $2), ($1, 'INV-2', 'second', $2) RETURNING id, code",
      [tenant, `secret of tenant ${index}`]
    )
    ids[tenant] = Object.fromEntries(rows.map((row) => [row.code, row.id]))
    await db.admin.query("INSERT INTO notes (tenant_id, document_id, text) VALUES ($1, $2, 'note')", [tenant, ids[tenant]?.['INV-1']])
  }
  return { tenants, ids }
}

/**
 * A role the app role may SET ROLE to and which reads every tenant's documents: the kind of
 * reporting role real databases grow. Granted WITHOUT INHERIT: with INHERIT the app role itself
 * would be subject to its policy and read every tenant on every request, SET ROLE or not.
 * Returns the role's name and a function that removes it again.
 */
export async function createAuditorRole (db: TestDatabase): Promise<{ auditor: string, drop: () => Promise<void> }> {
  const auditor = `${db.appRole.replace(/_app$/, '')}_auditor`
  await db.admin.query(`CREATE ROLE ${auditor} NOLOGIN NOBYPASSRLS; GRANT ${auditor} TO ${db.appRole} WITH INHERIT FALSE`)
  await db.asOwner(`GRANT SELECT ON documents TO ${auditor}; CREATE POLICY auditor_reads_all ON documents FOR SELECT TO ${auditor} USING (true)`)
  return {
    auditor,
    async drop () {
      await db.asOwner('DROP POLICY auditor_reads_all ON documents')
      await db.admin.query(`REVOKE ALL ON documents FROM ${auditor}; DROP ROLE ${auditor}`)
    }
  }
}

/** Everything committed in documents and notes, as the superuser sees it. */
export async function committed (db: TestDatabase): Promise<{ documents: DocumentRow[], notes: unknown[] }> {
  const docs = await db.admin.query<DocumentRow>('SELECT tenant_id, id, code, slug, body FROM documents ORDER BY tenant_id, code')
  const rest = await db.admin.query('SELECT tenant_id, document_id, text FROM notes ORDER BY tenant_id, document_id, text')
  return { documents: docs.rows, notes: rest.rows }
}

/** What a route does with the request's database; its return value is the reply. */
export type Attack = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>

export interface AttackApp {
  app: FastifyInstance
  /** SQLSTATE of every database error a route hit, in order (the reply itself only says 500). */
  sqlStates: string[]
}

function sqlStateIn (error: unknown): string | undefined {
  let current: unknown = error
  for (let depth = 0; current instanceof Error && depth < 8; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code
    current = current.cause
  }
  return undefined
}

/** An app with one POST route per attack (at `/<name>`), on `pool`, closed with the test. */
export async function attackApp (t: Test, pool: pg.Pool, attacks: Record<string, Attack>, options: Partial<FastifyTenantRlsSettings> = {}): Promise<AttackApp> {
  const sqlStates: string[] = []
  const app = await buildApp(t, {
    pool,
    options: { schema: documentSchema, ...pluginOptionsFor(pool), ...options },
    routes (app) {
      app.addHook('onError', async function recordSqlState (_request, _reply, error) {
        const state = sqlStateIn(error)
        if (state !== undefined) sqlStates.push(state)
      })
      for (const [name, attack] of Object.entries(attacks)) app.post(`/${name}`, attack)
    }
  })
  return { app, sqlStates }
}

/** Calls attack `name` as `tenant`. */
export function callAs (app: FastifyInstance, tenant: string, name: string, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: `/${name}`, headers: { ...bearer(app, { tenant_id: tenant }), ...headers } })
}

/** A promise to resolve from outside: lets a test hold a request at an exact point. */
export function gate (): { promise: Promise<void>, open (): void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => { open = resolve })
  return { promise, open }
}
