// Compile-only: with the schema registered through TenantRlsRegister, request.db and
// app.withTenant know the tables, their columns and the relational query API.
import fastifyJwt from '@fastify/jwt'
import { eq } from 'drizzle-orm'
import { pgTable, text, uuid } from 'drizzle-orm/pg-core'
import Fastify from 'fastify'
import pg from 'pg'
import fastifyTenantRls, { withTenant } from 'fastify-tenant-rls'
import type { TenantDatabase } from 'fastify-tenant-rls'

const projects = pgTable('projects', {
  tenantId: uuid('tenant_id').notNull(),
  id: uuid('id').primaryKey(),
  name: text('name').notNull()
})
const schema = { projects }

declare module 'fastify-tenant-rls' {
  interface TenantRlsRegister {
    schema: typeof schema
  }
}

const pool = new pg.Pool({ connectionTimeoutMillis: 5000 })
const app = Fastify()
await app.register(fastifyJwt, { secret: 'secret' })
await app.register(fastifyTenantRls, { pool, schema, claim: 'org.id', setting: 'app.current_tenant_id' })

app.get('/projects/:id', async (request) => {
  const tenantId: string | null = request.tenantId
  const byId = await request.db.select().from(projects).where(eq(projects.id, 'x'))
  const name: string | undefined = byId[0]?.name
  const relational = await request.db.query.projects.findFirst({ columns: { name: true } })
  const relationalName: string | undefined = relational?.name
  // @ts-expect-error the registered schema has no such table
  await request.db.query.invoices.findMany()
  await request.db.transaction(async (tx) => { await tx.insert(projects).values({ tenantId: 't', id: 'i', name: 'n' }) })
  return { tenantId, name, relationalName }
})

app.get('/health', { config: { tenant: false } }, async () => ({ ok: true }))

const count: number = await app.withTenant('tenant', async (db) => (await db.query.projects.findMany()).length)
const standalone: string[] = await withTenant(pool, 'tenant', async (db) => (await db.select().from(projects)).map((row) => row.name), { schema })
const explicit: TenantDatabase<typeof schema> | undefined = undefined
export { count, standalone, explicit }
