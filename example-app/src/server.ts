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
import { allowSystemLogin, createRoles, DEMO, seedDemoData, setUpDatabase } from './database.js'
import { DATA_DIR, startEmbeddedPostgres } from './embedded-postgres.js'
import type { EmbeddedServer } from './embedded-postgres.js'
import { asRole, EMBEDDED_PORT, EXAMPLE_DATABASE, ROLES, systemRoleUrl, withDatabase } from './settings.js'
import { countUsage } from './usage-job.js'

const PORT = Number(process.env.PORT ?? 3000)
const HOST = process.env.HOST ?? '127.0.0.1'
const DATA_FOLDER = relative(process.cwd(), DATA_DIR)
// Demo values: a real deployment reads its secrets from its environment and sets both variables.
const JWT_SECRET = process.env.JWT_SECRET ?? 'example-app-demo-secret-do-not-use-in-production'
const CONTEXT_KEYS = contextKeysFrom(process.env)
/** The support operator of the printed demo, and the lead who approves their grant. */
const SUPPORT = { operator: 'support:alice@example.com', approver: 'lead:bob@example.com' }
const DAY_MS = 24 * 60 * 60 * 1000

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

function printDemo (baseUrl: string, tokens: { acme: string, globex: string, support: string }): void {
  const acmeProject = DEMO.acme.projects[0].id
  const auth = (who: string): string => `-H "authorization: Bearer $${who}"`
  console.log(`
fastify-tenant-rls example is listening on ${baseUrl}

Two demo tenants, each with a token (valid 24 hours; a restart prints new ones):
  export ACME=${tokens.acme}
  export GLOBEX=${tokens.globex}
  export SUPPORT=${tokens.support}

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

SUPPORT is ${SUPPORT.operator} acting as Acme (the token's act.sub claim): refused (403)
until a lead grants access (in another terminal), then reading Acme's projects, read-only (403 on
a write); the access report lists it all (README "Support access and break-glass"):
  curl -s ${baseUrl}/projects ${auth('SUPPORT')}
  npm run -s example:admin -- grant --operator ${SUPPORT.operator} --tenant ${DEMO.acme.id} --approver ${SUPPORT.approver} --reason "ticket #4711" --minutes 30
  curl -s ${baseUrl}/projects ${auth('SUPPORT')}
  curl -s -X POST ${baseUrl}/projects ${auth('SUPPORT')} -H 'content-type: application/json' -d '{"name":"Read-only"}'
  npm run -s example:admin -- report --tenant ${DEMO.acme.id}

Ctrl+C stops the server and PostgreSQL; the data stays in ${process.env.DATABASE_URL ? 'your database' : DATA_FOLDER}.
`)
}

async function main (): Promise<void> {
  // What is running so far, stopped in reverse order.
  const running: { embedded?: EmbeddedServer, appPool?: pg.Pool, systemPool?: pg.Pool, app?: FastifyInstance, usageTimer?: NodeJS.Timeout } = {}

  // Registered before anything starts, so a signal during setup still stops PostgreSQL.
  let stopping: Promise<void> | undefined
  async function shutdown (signal: string): Promise<void> {
    console.log(`${signal}: shutting down (no new connections; in-flight requests finish or roll back)`)
    clearInterval(running.usageTimer)
    await running.app?.close()
    await running.appPool?.end()
    await running.systemPool?.end()
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
  // The system role's pool: the usage job, and the audit rows of impersonated requests.
  const systemPool = running.systemPool = new pg.Pool({ connectionString: systemRoleUrl(adminUrl), max: 2, connectionTimeoutMillis: 5000 })
  systemPool.on('error', (error) => console.error('idle system connection failed:', error.message))
  const signedContext = { keys: CONTEXT_KEYS.keys }
  if (CONTEXT_KEYS.development) console.warn('TENANT_CONTEXT_KEY is not set: signing the tenant context with the DEVELOPMENT key, whose secret is public. Set TENANT_CONTEXT_KEY (openssl rand -base64 48) and TENANT_CONTEXT_KEY_ID anywhere but your laptop.')
  try {
    await createRoles(admin, ROLES)
    await setUpDatabase(admin, ROLES, signedContext)
    await allowSystemLogin(admin, ROLES.systemPassword)
    await seedDemoData(admin, ROLES.ownerRole, appPool, signedContext)
  } finally {
    await admin.end()
  }

  const app = running.app = await buildApp({ pool: appPool, systemPool, jwtSecret: JWT_SECRET, signedContext, fastify: { logger: { level: process.env.LOG_LEVEL ?? 'info' } } })
  const address = await app.listen({ port: PORT, host: HOST })
  const sign = (tenantId: string, subject: string): string => app.jwt.sign({ tenant_id: tenantId, sub: subject }, { expiresIn: '24h' })
  const support = app.jwt.sign({ tenant_id: DEMO.acme.id, sub: 'demo-user@acme', act: { sub: SUPPORT.operator } }, { expiresIn: '24h' })
  printDemo(address, { acme: sign(DEMO.acme.id, 'demo-user@acme'), globex: sign(DEMO.globex.id, 'demo-user@globex'), support })

  // The nightly usage count: once now, then every 24 hours while the server runs.
  async function usageJob (): Promise<void> {
    app.log.info({ usage: await countUsage(app) }, 'usage count (job:usage-count, through the system role)')
  }
  await usageJob()
  running.usageTimer = setInterval(() => { usageJob().catch((error: unknown) => app.log.error(error, 'the usage count failed')) }, DAY_MS).unref()
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
