// Where the example's database is and who logs in to it, from the environment with demo defaults:
// shared by the server (server.ts) and the support admin script (admin.ts), which must reach the
// same database as the same roles. A real deployment sets every password variable.
import { SYSTEM_ROLE } from './database.js'

/** The embedded PostgreSQL's port when no DATABASE_URL is given. */
export const EMBEDDED_PORT = Number(process.env.EMBEDDED_POSTGRES_PORT ?? 54329)
/** The example's database on the embedded server. */
export const EXAMPLE_DATABASE = 'tenant_rls_example'

/** The roles `npm start` creates: owner, the API's login role, and the system role's password. */
export const ROLES = {
  ownerRole: 'example_owner',
  appRole: 'example_api',
  appPassword: process.env.EXAMPLE_API_PASSWORD ?? 'example-api-demo-password',
  systemPassword: process.env.EXAMPLE_SYSTEM_PASSWORD ?? 'example-system-demo-password'
}

/** `url` pointed at another database. */
export function withDatabase (url: string, database: string): string {
  const target = new URL(url)
  target.pathname = `/${database}`
  return target.toString()
}

/** `url` with another role and password. */
export function asRole (url: string, role: string, password: string): string {
  const target = new URL(url)
  target.username = role
  target.password = password
  return target.toString()
}

/**
 * The system role's connection string: DATABASE_URL's database (the server's), else the embedded
 * server's example database, as SYSTEM_ROLE with its password.
 */
export function systemRoleUrl (databaseUrl: string | undefined): string {
  const base = databaseUrl === undefined || databaseUrl === '' ? `postgres://127.0.0.1:${EMBEDDED_PORT}/${EXAMPLE_DATABASE}` : databaseUrl
  return asRole(base, SYSTEM_ROLE, ROLES.systemPassword)
}
