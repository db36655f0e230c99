// A fresh database per test file, with the three roles the product expects:
// - admin: superuser, used only to set up and to check what was really committed (bypasses RLS);
// - owner: owns the tables (NOLOGIN), as a migration role would;
// - app:   NOSUPERUSER NOBYPASSRLS, the only role the plugin ever connects as.
// The database is hardened for a shared login role with the package's own SQL, as the README tells
// users to harden theirs (otherwise the startup check refuses it), so every test also proves that SQL.
// Also the leak checks every test runs: no client checked out, no "idle in transaction" backend.
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import type { PoolConfig } from 'pg'
import type { Test } from 'tap'
import { sharedRoleHardeningSql, sharedRoleSuperuserHardeningSql } from 'fastify-tenant-rls/schema'
import { startPostgres } from './postgres-server.js'

export interface TestDatabase {
  /** Superuser pool on the test database: setup and verification only. */
  admin: pg.Pool
  /** Superuser connection string of the test database. */
  adminUrl: string
  appRole: string
  ownerRole: string
  /** Connection string for the app role (or the given role) on the test database. */
  url (role?: string): string
  /** A pool for the app role; ended with the database. */
  appPool (config?: PoolConfig): pg.Pool
  /** Runs SQL as the table owner (as migrations would). */
  asOwner (sql: string): Promise<void>
  /**
   * Throws unless `pool` has every client back and no backend of the app role is idle in a
   * transaction. It throws rather than asserting so that it also works in `t.afterEach`.
   */
  assertNoLeaks (t: Test, pool: pg.Pool): Promise<void>
  close (): Promise<void>
}

const APP_PASSWORD = 'app-password'

/** Polls `condition` until it holds; for state that settles on an event the test cannot await. */
export async function eventually (condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    // Re-check every few milliseconds; a tight loop would starve the processes it is waiting on.
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

export interface TestDatabaseOptions {
  /**
   * Also run the superuser's half of the hardening (default true). Without it the database is what
   * a managed PostgreSQL user gets by following the README: the startup check only warns.
   */
  superuserHardening?: boolean
}

export async function createTestDatabase (t: Test, options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const server = await startPostgres()
  const suffix = randomBytes(5).toString('hex')
  const name = `tenant_rls_${suffix}`
  const appRole = `${name}_app`
  const ownerRole = `${name}_owner`

  const root = new pg.Client({ connectionString: server.adminUrl })
  await root.connect()
  await root.query(`CREATE DATABASE ${name}`)
  await root.query(`CREATE ROLE ${ownerRole} NOLOGIN`)
  await root.query(`CREATE ROLE ${appRole} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD '${APP_PASSWORD}'`)
  await root.end()

  const adminUrl = new URL(server.adminUrl)
  adminUrl.pathname = `/${name}`
  const admin = new pg.Pool({ connectionString: adminUrl.toString(), max: 4 })
  await admin.query(sharedRoleHardeningSql({ role: appRole, database: name }))
  if (options.superuserHardening !== false) await admin.query(sharedRoleSuperuserHardeningSql())
  await admin.query(`GRANT CONNECT ON DATABASE ${name} TO ${appRole}; GRANT USAGE, CREATE ON SCHEMA public TO ${ownerRole}; GRANT USAGE ON SCHEMA public TO ${appRole}`)

  const pools: pg.Pool[] = []
  const url = (role = appRole): string => {
    const target = new URL(adminUrl.toString())
    target.username = role
    target.password = role === appRole ? APP_PASSWORD : target.password
    return target.toString()
  }

  const database: TestDatabase = {
    admin,
    adminUrl: adminUrl.toString(),
    appRole,
    ownerRole,
    url,
    appPool (config = {}) {
      const pool = new pg.Pool({ connectionString: url(), max: 4, connectionTimeoutMillis: 2000, ...config })
      pools.push(pool)
      return pool
    },
    async asOwner (sql) {
      const client = await admin.connect()
      try {
        await client.query(`SET ROLE ${ownerRole}`)
        await client.query(sql)
      } finally {
        await client.query('RESET ROLE')
        client.release()
      }
    },
    async assertNoLeaks (tt, pool) {
      await eventually(() => pool.totalCount === pool.idleCount, `every pooled client to be released (${tt.name})`)
      const { rows } = await admin.query<{ count: number }>(
        "SELECT count(*)::int AS count FROM pg_stat_activity WHERE usename = $1 AND state LIKE 'idle in transaction%'",
        [appRole]
      )
      if (rows[0]?.count !== 0) throw new Error(`${String(rows[0]?.count)} backend(s) of the app role idle in a transaction (${tt.name})`)
    },
    async close () {
      // pool.end() resolves before its clients' sockets have closed; DROP DATABASE ... WITH (FORCE)
      // can still terminate one, and an unheard pool 'error' would then end the test process.
      for (const pool of [...pools, admin]) pool.on('error', () => {})
      await Promise.all(pools.map((pool) => pool.ending ? undefined : pool.end()))
      await admin.end()
      const cleanup = new pg.Client({ connectionString: server.adminUrl })
      await cleanup.connect()
      await cleanup.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await cleanup.query(`DROP ROLE IF EXISTS ${appRole}`)
      await cleanup.query(`DROP ROLE IF EXISTS ${ownerRole}`)
      await cleanup.end()
      await server.stop()
    }
  }
  t.teardown(() => database.close())
  return database
}
