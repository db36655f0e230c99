// `npm start`: runs the example API. Without DATABASE_URL it starts an embedded PostgreSQL (data
// kept in example-app/.data); with DATABASE_URL (a superuser) it uses that
// database. Either way it creates the roles, migrates as the owner, seeds two demo tenants, listens
// on PORT (default 3000) and prints two demo tokens with curl commands that show the isolation.
// SIGINT/SIGTERM: stop accepting, finish or roll back what is in flight, end the pool, stop PostgreSQL.
import { relative } from 'node:path'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import { buildApp } from './app.js'
import { contextKeysFrom } from './context-keys.js'
import { createRoles, DEMO, seedDemoData, setUpDatabase } from './database.js'
import { DATA_DIR, startEmbeddedPostgres } from './embedded-postgres.js'
import type { EmbeddedServer } from './embedded-postgres.js'

const PORT = Number(process.env.PORT ?? 3000)
const HOST = process.env.HOST ?? '127.0.0.1'
const EMBEDDED_PORT = Number(process.env.EMBEDDED_POSTGRES_PORT ?? 54329)
const EXAMPLE_DATABASE = 'tenant_rls_example'
const DATA_FOLDER = relative(process.cwd(), DATA_DIR)
// Demo values: a real deployment reads its secrets from its environment and sets both variables.
const JWT_SECRET = process.env.JWT_SECRET ?? 'example-app-demo-secret-do-not-use-in-production'
const CONTEXT_KEYS = contextKeysFrom(process.env)
const ROLES = {
  ownerRole: 'example_owner',
  appRole: 'example_api',
  appPassword: process.env.EXAMPLE_API_PASSWORD ?? 'example-api-demo-password'
}

function withDatabase (url: string, database: string): string {
  const target = new URL(url)
  target.pathname = `/${database}`
  return target.toString()
}

function asRole (url: string, role: string, password: string): string {
  const target = new URL(url)
  target.username = role
  target.password = password
  return target.toString()
}

// The embedded server starts with only the `postgres` database; the example gets its own.
async function createExampleDatabase (serverUrl: string): Promise<string> {
  const client = new pg.Client({ connectionString: serverUrl })
  await client.connect()
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1', [EXAMPLE_DATABASE])
    if (rowCount === 0) await client.query(`CREATE DATABASE ${EXAMPLE_DATABASE}`)
  } finally {
    await client.end()
  }
  return withDatabase(serverUrl, EXAMPLE_DATABASE)
}

function printDemo (baseUrl: string, tokens: { acme: string, globex: string }): void {
  const acmeProject = DEMO.acme.projects[0].id
  const auth = (who: string): string => `-H "authorization: Bearer $${who}"`
  console.log(`
fastify-tenant-rls example is listening on ${baseUrl}

Two demo tenants, each with a token (valid 24 hours; a restart prints new ones):
  export ACME=${tokens.acme}
  export GLOBEX=${tokens.globex}

Acme sees its projects, Globex sees only its own:
  curl -s ${baseUrl}/projects ${auth('ACME')}
  curl -s ${baseUrl}/projects ${auth('GLOBEX')}

An Acme project, asked for by Globex, does not exist (404, not 403):
  curl -s ${baseUrl}/projects/${acmeProject} ${auth('ACME')}
  curl -s ${baseUrl}/projects/${acmeProject} ${auth('GLOBEX')}

Globex cannot hang a task on Acme's project (404), and a duplicate name answers 409:
  curl -s -X POST ${baseUrl}/projects/${acmeProject}/tasks ${auth('GLOBEX')} -H 'content-type: application/json' -d '{"title":"Sneaky"}'
  curl -s -X POST ${baseUrl}/projects ${auth('ACME')} -H 'content-type: application/json' -d '{"name":"Hiring"}'

No token, no data (401):
  curl -s ${baseUrl}/projects

Ctrl+C stops the server and PostgreSQL; the data stays in ${process.env.DATABASE_URL ? 'your database' : DATA_FOLDER}.
`)
}

async function main (): Promise<void> {
  // What is running so far, stopped in reverse order.
  const running: { embedded?: EmbeddedServer, appPool?: pg.Pool, app?: FastifyInstance } = {}

  // Registered before anything starts, so a signal during setup still stops PostgreSQL.
  let stopping: Promise<void> | undefined
  async function shutdown (signal: string): Promise<void> {
    console.log(`${signal}: shutting down (no new connections; in-flight requests finish or roll back)`)
    await running.app?.close()
    await running.appPool?.end()
    await running.embedded?.stop()
    console.log('stopped')
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      stopping ??= shutdown(signal).then(
        // Exit explicitly: embedded-postgres's exit hook would otherwise wait on a server that is gone.
        () => process.exit(0),
        (error: unknown) => { console.error(error); process.exit(1) }
      )
    })
  }

  let adminUrl = process.env.DATABASE_URL
  if (adminUrl === undefined || adminUrl === '') {
    console.log(`No DATABASE_URL: starting an embedded PostgreSQL on port ${EMBEDDED_PORT}, data in ${DATA_FOLDER}`)
    running.embedded = await startEmbeddedPostgres(EMBEDDED_PORT)
    adminUrl = await createExampleDatabase(running.embedded.adminUrl)
  }

  const admin = new pg.Pool({ connectionString: adminUrl, max: 2 })
  const appPool = running.appPool = new pg.Pool({
    connectionString: asRole(adminUrl, ROLES.appRole, ROLES.appPassword),
    max: 10,
    connectionTimeoutMillis: 5000
  })
  // An idle connection the server terminates (say PostgreSQL shutting down) must not crash the process.
  appPool.on('error', (error) => console.error('idle database connection failed:', error.message))
  const signedContext = { keys: CONTEXT_KEYS.keys }
  if (CONTEXT_KEYS.development) console.warn('TENANT_CONTEXT_KEY is not set: signing the tenant context with the DEVELOPMENT key, whose secret is public. Set TENANT_CONTEXT_KEY (openssl rand -base64 48) and TENANT_CONTEXT_KEY_ID anywhere but your laptop.')
  try {
    await createRoles(admin, ROLES)
    await setUpDatabase(admin, ROLES, signedContext)
    await seedDemoData(admin, ROLES.ownerRole, appPool, signedContext)
  } finally {
    await admin.end()
  }

  const app = running.app = await buildApp({ pool: appPool, jwtSecret: JWT_SECRET, signedContext, fastify: { logger: { level: process.env.LOG_LEVEL ?? 'info' } } })
  const address = await app.listen({ port: PORT, host: HOST })
  const sign = (tenantId: string, subject: string): string => app.jwt.sign({ tenant_id: tenantId, sub: subject }, { expiresIn: '24h' })
  printDemo(address, { acme: sign(DEMO.acme.id, 'demo-user@acme'), globex: sign(DEMO.globex.id, 'demo-user@globex') })
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
