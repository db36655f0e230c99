// The example's tables: a tenants table (one row per organization) and two tenant tables built
// with fastify-tenant-rls/schema. `drizzle-kit generate` reads this file to write the migrations in
// ../drizzle; the tests and the isolation kit import it too.
import { boolean, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core'
import { createTenantTable, tenantForeignKey, tenantUnique } from 'fastify-tenant-rls/schema'

/** Organizations. Not a tenant table: the app role has no privilege on it at all. */
export const tenants = pgTable('tenants', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull()
})

const tenantTable = createTenantTable({ tenants: tenants.id, signedContext: true })

export const projects = tenantTable('projects', {
  id: uuid('id').notNull().defaultRandom(),
  name: text('name').notNull(),
  description: text('description').notNull().default(''),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow()
}, (t) => [tenantUnique(t.name)])

export const tasks = tenantTable('tasks', {
  id: uuid('id').notNull().defaultRandom(),
  projectId: uuid('project_id').notNull(),
  title: text('title').notNull(),
  done: boolean('done').notNull().default(false),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow()
}, (t) => [
  tenantForeignKey(t.projectId, projects),
  tenantUnique(t.projectId, t.title)
])

// Types request.db and app.withTenant from this schema everywhere in the app (declaration merging).
declare module 'fastify-tenant-rls' {
  interface TenantRlsRegister {
    schema: typeof import('./schema.js')
  }
}
