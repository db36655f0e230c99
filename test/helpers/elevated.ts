// The elevated-access world of a test file: the projects world (two tenants, the app pool) plus a
// system role made with the package's own SQL (systemRoleSql, auditTrailSql, grantsTableSql, as
// the README tells users to), and a pool of it. Also unsafe roles on demand, each dropped after.
import { randomBytes } from 'node:crypto'
import { pgTable, text, uuid } from 'drizzle-orm/pg-core'
import pg from 'pg'
import type { Test } from 'tap'
import { createTenantTable } from 'fastify-tenant-rls/schema'
import { auditTrailSql, grantsTableSql, systemRoleSql } from 'fastify-tenant-rls/elevated'
import type { TestDatabase } from './database.js'
import { projectsWorld } from './fixture.js'

const SYSTEM_PASSWORD = 'system-password'

// The fixture's tables as drizzle declarations, for systemRoleSql: projects is a tenant table, tenants is not.
const tenants = pgTable('tenants', { id: uuid('id').primaryKey(), name: text('name').notNull() })
const projects = createTenantTable({ tenants: tenants.id })('projects', { id: uuid('id').notNull(), name: text('name').notNull() })
export const systemSchema = { tenants, projects }

export interface ElevatedWorld {
  db: TestDatabase
  pool: pg.Pool
  tenantA: string
  tenantB: string
  systemRole: string
  systemPool: pg.Pool
  /** Creates a login role (dropped after the file), runs `setup` on it as the superuser, returns a pool of it. */
  loginRole (t: Test, attributes: string, setup?: (role: string) => string): Promise<{ role: string, pool: pg.Pool }>
  /** Audit rows, read as the superuser. */
  auditRows (): Promise<Array<{ seq: string, event: string, actor: string, reason: string | null, tenant_id: string | null, grant_id: string | null, detail: Record<string, unknown> }>>
}

function roleUrl (db: TestDatabase, role: string): string {
  const url = new URL(db.adminUrl)
  url.username = role
  url.password = SYSTEM_PASSWORD
  return url.toString()
}

export async function elevatedWorld (t: Test, max = 2): Promise<ElevatedWorld> {
  const { db, pool, tenantA, tenantB } = await projectsWorld(t, max)
  const database = new URL(db.adminUrl).pathname.slice(1)
  // Each role is dropped when the test that made it ends (teardowns run last-registered first, so
  // the file's roles go before its database).
  async function loginRole (t: Test, attributes: string, setup?: (role: string) => string): Promise<{ role: string, pool: pg.Pool }> {
    const role = `${database}_r${randomBytes(3).toString('hex')}`
    await db.admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${SYSTEM_PASSWORD}' ${attributes}; GRANT CONNECT ON DATABASE ${database} TO ${role}`)
    const rolePool = new pg.Pool({ connectionString: roleUrl(db, role), max: 2, connectionTimeoutMillis: 2000 })
    t.teardown(async () => {
      rolePool.on('error', () => {})
      await rolePool.end()
      await db.admin.query(`DROP OWNED BY ${role} CASCADE; DROP ROLE ${role}`)
    })
    if (setup !== undefined) await db.admin.query(setup(role))
    return { role, pool: rolePool }
  }

  const { role: systemRole, pool: systemPool } = await loginRole(t, 'NOSUPERUSER', (role) => systemRoleSql(systemSchema, { role }))
  await db.asOwner(auditTrailSql({ systemRole }))
  await db.asOwner(grantsTableSql({ appRole: db.appRole, systemRole }))

  return {
    db,
    pool,
    tenantA,
    tenantB,
    systemRole,
    systemPool,
    loginRole,
    async auditRows () {
      const { rows } = await db.admin.query('SELECT seq::text AS seq, event, actor, reason, tenant_id, grant_id, detail FROM tenant_rls_audit a ORDER BY a.seq')
      return rows
    }
  }
}
