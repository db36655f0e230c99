// Compile-only: another plugin owns `request.db`, so the tenant database is registered under
// `decorator: 'tenantDb'`. request.tenantDb is the typed tenant database; request.db keeps the
// other plugin's type (no conflicting declaration from this package).
import fastifyJwt from '@fastify/jwt'
import { pgTable, text, uuid } from 'drizzle-orm/pg-core'
import Fastify from 'fastify'
import type pg from 'pg'
import type { FastifyPluginAsync } from 'fastify'
import fastifyTenantRls from 'fastify-tenant-rls'
import type { TenantDatabase } from 'fastify-tenant-rls'

const projects = pgTable('projects', {
  tenantId: uuid('tenant_id').notNull(),
  id: uuid('id').primaryKey(),
  name: text('name').notNull()
})
const schema = { projects }

/** What some other plugin puts on request.db. */
interface KeyValueStore { get (key: string): Promise<string | undefined> }

declare module 'fastify' {
  interface FastifyRequest {
    db: KeyValueStore
  }
}

declare module 'fastify-tenant-rls' {
  interface TenantRlsRegister {
    schema: typeof schema
    decorator: 'tenantDb'
  }
}

declare const keyValuePlugin: FastifyPluginAsync
declare const pool: pg.Pool

const app = Fastify()
await app.register(keyValuePlugin)
await app.register(fastifyJwt, { secret: 'secret' })
await app.register(fastifyTenantRls, { connectionString: 'postgres://app@localhost/app', poolConfig: { max: 5 }, schema, decorator: 'tenantDb' })

app.get('/projects', async (request) => {
  const cached: string | undefined = await request.db.get('projects')
  const rows = await request.tenantDb.select().from(projects)
  const name: string | undefined = rows[0]?.name
  const first = await request.tenantDb.query.projects.findFirst()
  // @ts-expect-error request.db is the other plugin's store, not a drizzle database
  await request.db.select()
  const handle: TenantDatabase = request.tenantDb
  return { cached, name, first: first?.id, handle: handle !== undefined }
})

// @ts-expect-error exactly one pool source: pool and connectionString together are refused
await app.register(fastifyTenantRls, { pool, connectionString: 'postgres://app@localhost/app' })
