// The package's own tables (the audit trail and the support grants, made by auditTrailSql and
// grantsTableSql in their default place, public) carry a tenant_id column but no tenant's data:
// the catalog readers that look for tenant tables (the tenant-table audit, the isolation kit, the
// exports and the erasure) must leave them alone. Before, the audit reported them as broken tenant
// tables and an erasure tried to delete from the append-only trail.
import t from 'tap'
import { inspectTenantErasure } from 'fastify-tenant-rls'
import { auditDatabase } from 'fastify-tenant-rls/audit'
import { checkTenantIsolation } from 'fastify-tenant-rls/testing'
import { discoverTenantTables } from '../../src/tenant-catalog.js'
import { elevatedWorld } from '../helpers/elevated.js'

const world = await elevatedWorld(t)
const { db } = world
const LIBRARY_TABLES = /tenant_rls_audit|tenant_rls_grants/

t.test('the library tables are in public with a tenant_id column, as their helpers make them', async (t) => {
  const { rows } = await db.admin.query<{ name: string }>(`SELECT c.relname::text AS name FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attname = 'tenant_id' ORDER BY 1`)
  t.same(rows.map((row) => row.name), ['projects', 'tenant_rls_audit', 'tenant_rls_grants'])
})

t.test('tenant-table discovery (exports, imports, the isolation kit) finds only the tenant table', async (t) => {
  t.same(await discoverTenantTables(db.admin, 'public', 'tenant_id'), ['projects'])
})

t.test('the tenant-table audit reports nothing about the library tables', async (t) => {
  const report = await auditDatabase(db.admin, { appRole: db.appRole })
  t.same(report.findings.filter((finding) => LIBRARY_TABLES.test(finding.object)).map((finding) => `${finding.rule} ${finding.object}`), [])
})

t.test('the erasure dry run lists the tenant table only', async (t) => {
  const report = await inspectTenantErasure({ pool: db.admin, tenantId: world.tenantA, tenantsTable: 'tenants' })
  t.same(report.tables.map(({ table }) => table), ['projects'])
})

t.test('the isolation kit checks the tenant table only', async (t) => {
  const report = await checkTenantIsolation({ adminPool: db.admin, appPool: world.pool })
  t.same(report.tables, ['projects'])
})
