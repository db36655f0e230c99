// Everything the example needs from a database before it serves: the roles, the migrations (run as
// the owner role, never as the application role) and the demo data. Each step is idempotent, so
// `npm start` can run it on every start; the example's tests run the same steps on a fresh database.
import { fileURLToPath } from 'node:url'
import { drizzle } from 'drizzle-orm/node-postgres'
import { migrate } from 'drizzle-orm/node-postgres/migrator'
import { withTenant } from 'fastify-tenant-rls'
import { systemRoleSql } from 'fastify-tenant-rls/elevated'
import type { SignedContextOptions, SigningKey } from 'fastify-tenant-rls'
import { installSigningKey, SIGNING_KEYS_TABLE, sharedRoleHardeningSql, sharedRoleSuperuserHardeningSql } from 'fastify-tenant-rls/schema'
import pg from 'pg'
import * as schema from './schema.js'

/** The group role the checked-in migrations grant table privileges to (see drizzle/0001_*.sql). */
export const GRANTEE_ROLE = 'example_app'

/**
 * The group role that owns the signed tenant context (schema tenant_rls, its key table and
 * functions; drizzle/0002_*.sql). The owner role joins it, so migrations and key installation run
 * as the owner; the app role never does, so it can neither read nor install a key.
 */
export const KEYS_OWNER_ROLE = 'example_keys'

/**
 * The role of the system pool: cross-tenant jobs, support grants and the audit trail
 * (drizzle/0004_*.sql to 0006_*.sql name it). It logs in itself and is a member of no role: the
 * plugin refuses a system role that carries another role's privileges, so unlike the app role it
 * cannot be a member of a group the migrations grant to.
 */
export const SYSTEM_ROLE = 'example_system'

/**
 * Where the audit trail and the support grants are (drizzle/0004_*.sql to 0006_*.sql): a schema of
 * their own, so that nothing that walks the tenant tables of public takes them for one. Given to the
 * plugin and to every elevated call.
 */
export const ELEVATED_TABLES = { auditTable: 'elevated.audit_trail', grantsTable: 'elevated.grants' } as const

/** The migrations drizzle-kit generated from schema.ts, plus the custom ones (each from a helper but 0004). */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL('../drizzle', import.meta.url))

/** The roles of one deployment. */
export interface DatabaseRoles {
  /** Owns the tables and runs the migrations (NOLOGIN: reached with SET ROLE by an admin connection). */
  ownerRole: string
  /** The role the server logs in as; a member of GRANTEE_ROLE, no superuser, no BYPASSRLS. */
  appRole: string
}

/** Roles the startup creates when they do not exist yet. */
export interface RoleCredentials extends DatabaseRoles {
  appPassword: string
}

const { escapeIdentifier, escapeLiteral } = pg

async function createRoleIfMissing (admin: pg.Pool, role: string, attributes: string): Promise<void> {
  // CREATE ROLE has no IF NOT EXISTS; a concurrent creator (two test processes sharing one server)
  // is tolerated by the exception handler rather than by a check-then-create race.
  await admin.query(`DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = ${escapeLiteral(role)}) THEN
      CREATE ROLE ${escapeIdentifier(role)} ${attributes};
    END IF;
  EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
  END $$`)
}

/** Creates the owner and login roles when missing (run as a superuser on the target database). */
export async function createRoles (admin: pg.Pool, roles: RoleCredentials): Promise<void> {
  await createRoleIfMissing(admin, roles.ownerRole, 'NOLOGIN')
  await createRoleIfMissing(admin, roles.appRole, `LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD ${escapeLiteral(roles.appPassword)}`)
}

/**
 * Gives existing roles what they need on the current database: the owner may create the tables
 * (and drizzle's migrations schema); the app role joins GRANTEE_ROLE and may not create anything,
 * not even temporary tables. The shared-role hardening runs first: the database owner's part always
 * works; the superuser's part changes nothing without a superuser (the plugin then logs warnings).
 */
export async function grantRoles (admin: pg.Pool, roles: DatabaseRoles): Promise<void> {
  await createRoleIfMissing(admin, GRANTEE_ROLE, 'NOLOGIN NOSUPERUSER NOBYPASSRLS')
  await createRoleIfMissing(admin, KEYS_OWNER_ROLE, 'NOLOGIN NOSUPERUSER NOBYPASSRLS')
  // NOLOGIN until allowSystemLogin gives it a password: the migrations only need it to exist.
  await createRoleIfMissing(admin, SYSTEM_ROLE, 'NOLOGIN NOSUPERUSER NOBYPASSRLS')
  const owner = escapeIdentifier(roles.ownerRole)
  const { rows } = await admin.query<{ name: string }>('SELECT current_database() AS name')
  const database = rows[0]?.name ?? ''
  await admin.query(sharedRoleHardeningSql({ role: roles.appRole, database }))
  await admin.query(sharedRoleSuperuserHardeningSql())
  await admin.query(`
    GRANT CREATE ON DATABASE ${escapeIdentifier(database)} TO ${owner};
    GRANT USAGE, CREATE ON SCHEMA public TO ${owner};
    GRANT USAGE ON SCHEMA public TO ${escapeIdentifier(GRANTEE_ROLE)};
    GRANT ${escapeIdentifier(GRANTEE_ROLE)} TO ${escapeIdentifier(roles.appRole)};
    GRANT ${escapeIdentifier(KEYS_OWNER_ROLE)} TO ${owner}
  `)
}

// Runs `work` on one admin connection switched to the owner role, as a migration tool would.
async function asOwner (admin: pg.Pool, ownerRole: string, work: (client: pg.PoolClient) => Promise<void>): Promise<void> {
  const client = await admin.connect()
  try {
    await client.query(`SET ROLE ${escapeIdentifier(ownerRole)}`)
    await work(client)
    await client.query('RESET ROLE')
    client.release()
  } catch (error) {
    // The connection may still be the owner: never hand it back to the pool.
    client.release(true)
    throw error
  }
}

/** Applies the pending migrations with drizzle's migrator, as the owner role. */
export async function migrateDatabase (admin: pg.Pool, ownerRole: string): Promise<void> {
  await asOwner(admin, ownerRole, (client) => migrate(drizzle(client), { migrationsFolder: MIGRATIONS_FOLDER }))
}

// ALTER ROLE rewrites the role's one catalog row, shared by every database of the server: two
// setups at once (test files sharing one DATABASE_URL server) fail with "tuple concurrently
// updated". Locking the row first makes the second wait, then update the row the first committed.
async function alterSystemRole (admin: pg.Pool, statements: string): Promise<void> {
  const client = await admin.connect()
  try {
    await client.query('BEGIN')
    await client.query('SELECT FROM pg_catalog.pg_authid WHERE rolname = $1 FOR UPDATE', [SYSTEM_ROLE])
    await client.query(statements)
    await client.query('COMMIT')
    client.release()
  } catch (error) {
    // Whatever state the transaction is in, the connection is not reused.
    client.release(true)
    throw error
  }
}

/**
 * Makes SYSTEM_ROLE what the plugin's check wants, from systemRoleSql: BYPASSRLS (which needs a
 * superuser, hence here and not in a migration, which runs as the owner), SELECT, INSERT, UPDATE on
 * the tenant tables, SELECT on `tenants`, never DELETE. Run after the migrations on every setup, so
 * a table added to schema.ts gets its privileges without a migration to forget.
 */
export async function grantSystemRole (admin: pg.Pool): Promise<void> {
  const { rows } = await admin.query<{ name: string }>('SELECT current_database() AS name')
  await alterSystemRole(admin, systemRoleSql(schema, { role: SYSTEM_ROLE }))
  // The shared-role hardening revoked CONNECT from PUBLIC.
  await admin.query(`GRANT CONNECT ON DATABASE ${escapeIdentifier(rows[0]?.name ?? '')} TO ${escapeIdentifier(SYSTEM_ROLE)}`)
}

/**
 * Lets SYSTEM_ROLE log in with `password` (run as a superuser). Only what holds the system pool
 * needs it: the server (it records impersonated requests and runs the usage job) and the admin
 * script that writes grants.
 */
export async function allowSystemLogin (admin: pg.Pool, password: string): Promise<void> {
  await alterSystemRole(admin, `ALTER ROLE ${escapeIdentifier(SYSTEM_ROLE)} LOGIN PASSWORD ${escapeLiteral(password)}`)
}

/**
 * Installs, as the owner role, each of `keys` the database does not hold yet (by id), so setup can
 * run on every start. A key whose id is installed with another secret is left alone: the plugin's
 * startup check then refuses to start, naming the key.
 */
export async function installContextKeys (admin: pg.Pool, ownerRole: string, keys: readonly SigningKey[]): Promise<void> {
  await asOwner(admin, ownerRole, async (client) => {
    for (const key of keys) {
      const { rowCount } = await client.query(`SELECT 1 FROM ${SIGNING_KEYS_TABLE} WHERE id = $1`, [key.id])
      if (rowCount === 0) await installSigningKey(client, key)
    }
  })
}

/**
 * Brings a database to the example's schema for existing roles: grants, migrations, the system
 * role's privileges, then the signing keys. The example's tests (and anything that wants the
 * example's tables) start from here.
 */
export async function setUpDatabase (admin: pg.Pool, roles: DatabaseRoles, signedContext: SignedContextOptions): Promise<void> {
  await grantRoles(admin, roles)
  await migrateDatabase(admin, roles.ownerRole)
  await grantSystemRole(admin)
  await installContextKeys(admin, roles.ownerRole, signedContext.keys)
}

/** The two demo organizations and the rows `seedDemoData` gives them (fixed ids: seeding is repeatable). */
export const DEMO = {
  acme: {
    id: '0f4c6a1e-3d1b-4c57-9a53-6f0c1f0a0001',
    name: 'Acme',
    projects: [
      { id: '5b1f0c2a-8e4d-4f7b-b1a2-000000000a01', name: 'Website relaunch', tasks: ['Pick a font', 'Write the copy'] },
      { id: '5b1f0c2a-8e4d-4f7b-b1a2-000000000a02', name: 'Hiring', tasks: ['Post the job ad'] }
    ]
  },
  globex: {
    id: '0f4c6a1e-3d1b-4c57-9a53-6f0c1f0a0002',
    name: 'Globex',
    projects: [
      { id: '5b1f0c2a-8e4d-4f7b-b1a2-000000000b01', name: 'Moon base', tasks: ['Order the rocket'] }
    ]
  }
} as const

/**
 * Inserts the demo tenants (as the owner: the app role has no privilege on `tenants`) and their
 * rows (through withTenant on the app pool, signed, so RLS checks every row). Existing rows are kept.
 */
export async function seedDemoData (admin: pg.Pool, ownerRole: string, appPool: pg.Pool, signedContext: SignedContextOptions): Promise<void> {
  await asOwner(admin, ownerRole, async (client) => {
    await drizzle(client).insert(schema.tenants)
      .values(Object.values(DEMO).map(({ id, name }) => ({ id, name })))
      .onConflictDoNothing()
  })
  for (const tenant of Object.values(DEMO)) {
    await withTenant(appPool, tenant.id, async (db) => {
      for (const project of tenant.projects) {
        await db.insert(schema.projects).values({ id: project.id, name: project.name }).onConflictDoNothing()
        await db.insert(schema.tasks)
          .values(project.tasks.map((title) => ({ projectId: project.id, title })))
          .onConflictDoNothing()
      }
    }, { schema, signedContext })
  }
}
