// Compile-only: with no schema registered, request.db still runs the query builder on any table,
// but has no relational tables; options are checked.
import fastifyJwt from '@fastify/jwt'
import { sql } from 'drizzle-orm'
import { pgTable, text } from 'drizzle-orm/pg-core'
import Fastify from 'fastify'
import pg from 'pg'
import fastifyTenantRls from 'fastify-tenant-rls'

const notes = pgTable('notes', { body: text('body').notNull() })
const pool = new pg.Pool({ connectionTimeoutMillis: 5000 })
const app = Fastify()
await app.register(fastifyJwt, { secret: 'secret' })
await app.register(fastifyTenantRls, { pool, resolveTenant: async (request) => (request.user as { org?: string }).org })
// @ts-expect-error pool is required
await app.register(fastifyTenantRls, {})
// @ts-expect-error claim is a string
await app.register(fastifyTenantRls, { pool, claim: 42 })

app.get('/notes', async (request) => {
  const rows = await request.db.select().from(notes)
  const body: string | undefined = rows[0]?.body
  await request.db.execute(sql`SELECT 1`)
  // @ts-expect-error without a registered schema there are no relational tables
  await request.db.query.notes.findMany()
  return body
})
