// citusSql (fastify-tenant-rls/schema): the Citus statements for the schema helpers' tables. Citus
// cannot be installed here, so this checks the SQL emitted, not a Citus cluster running it.
import t from 'tap'
import { pgSchema, pgTable, text, uuid } from 'drizzle-orm/pg-core'
import { citusSql, createTenantTable, tenantForeignKey } from 'fastify-tenant-rls/schema'

const tenants = pgTable('tenants', { id: uuid('id').primaryKey(), name: text('name').notNull() })
const tenantTable = createTenantTable({ tenants: tenants.id })
const projects = tenantTable('projects', { id: uuid('id').notNull() })
const tasks = tenantTable('tasks', { id: uuid('id').notNull(), projectId: uuid('project_id').notNull() }, (t) => [tenantForeignKey(t.projectId, projects)])
const audit = pgTable('audit', { id: uuid('id').primaryKey() })

t.test('the tenants table is a reference table; tenant tables are distributed by tenant_id, parents first, co-located', async (t) => {
  // The child is listed first: only the foreign key can put the parent before it.
  t.equal(citusSql({ tasks, audit, projects, tenants }), [
    '-- citusSql (fastify-tenant-rls/schema): reference and distributed tables for Citus',
    'SELECT create_reference_table(\'"tenants"\');',
    '--> statement-breakpoint',
    'SELECT create_distributed_table(\'"projects"\', \'tenant_id\');',
    '--> statement-breakpoint',
    'SELECT create_distributed_table(\'"tasks"\', \'tenant_id\', colocate_with => \'"projects"\');',
    ''
  ].join('\n'))
})

t.test('schema-qualified and quoted names', async (t) => {
  const app = pgSchema('app')
  const orgs = app.table("org's", { id: uuid('id').primaryKey() })
  const notes = createTenantTable({ tenants: orgs.id })('notes', { id: uuid('id').notNull() })
  t.match(citusSql({ notes, orgs }), /create_reference_table\('"app"\."org''s"'\);[\s\S]*create_distributed_table\('"notes"', 'tenant_id'\);/)
})

t.test('a schema without tenant tables is refused', async (t) => {
  t.throws(() => citusSql({ tenants, audit }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /no table declared with tenantTable/ })
})
