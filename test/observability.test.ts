// Issue 9 section 6: what the plugin tells operators. diagnostics_channel events for every tenant
// transaction (and nothing at all without a subscriber), one warning per burst of 503s with the
// pool's figures, startup connection failures that name the plugin and the fix, and a startup
// warning when no policy reads the configured setting.
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import fastifyJwt from '@fastify/jwt'
import { sql } from 'drizzle-orm'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import t from 'tap'
import type { Test } from 'tap'
import fastifyTenantRls, { DIAGNOSTICS_CHANNELS, withTenant } from 'fastify-tenant-rls'
import type { TransactionFinishEvent, TransactionOpenEvent, TransactionQueryEvent } from 'fastify-tenant-rls'
import { createTestDatabase } from './helpers/database.js'
import { bearer, buildApp, createProjectsTable, JWT_SECRET, projects } from './helpers/fixture.js'
import { freePort } from './helpers/postgres-server.js'

const db = await createTestDatabase(t)
const { tenantA } = await createProjectsTable(db)
const pool = db.appPool()
t.afterEach(async (t) => {
  await db.assertNoLeaks(t, pool)
  await db.admin.query("DELETE FROM projects WHERE name NOT IN ('a-1', 'a-2', 'b-1')")
})

interface Recorded {
  open: TransactionOpenEvent[]
  query: TransactionQueryEvent[]
  finish: TransactionFinishEvent[]
}

/** Subscribes to the three channels until the test ends. */
function record (t: Test): Recorded {
  const recorded: Recorded = { open: [], query: [], finish: [] }
  for (const kind of ['open', 'query', 'finish'] as const) {
    const listener = (message: unknown): void => { (recorded[kind] as unknown[]).push(message) }
    subscribe(DIAGNOSTICS_CHANNELS[kind], listener)
    t.teardown(() => { unsubscribe(DIAGNOSTICS_CHANNELS[kind], listener) })
  }
  return recorded
}

type LogLine = { level: number, msg: string } & Record<string, unknown>

function logStream (): { lines: LogLine[], stream: { write (line: string): void } } {
  const lines: LogLine[] = []
  return { lines, stream: { write (line: string) { lines.push(JSON.parse(line)) } } }
}

function routes (app: FastifyInstance): void {
  app.get('/projects', async (request) => request.db.select().from(projects))
  app.post('/projects', async (request) => {
    await request.db.insert(projects).values({ name: String((request.body as { name: string }).name), tenantId: String(request.tenantId) })
    return { ok: true }
  })
  app.get('/fails', async (request) => request.db.execute(sql`SELECT 1 / 0`))
  app.get('/throws', async (request) => {
    await request.db.select().from(projects)
    throw Object.assign(new Error('route failed'), { code: 'ROUTE_FAILED', statusCode: 500 })
  })
  app.get('/gone', async (request, reply) => {
    await request.db.select().from(projects)
    return reply.code(404).send({ gone: true })
  })
  app.get('/static', async () => ({ static: true }))
}

t.test('a committed request publishes open (pool wait), each query (command, rows, duration) and finish (hold time)', async (t) => {
  const app = await buildApp(t, { pool, routes })
  const events = record(t)
  const auth = bearer(app, { tenant_id: tenantA })
  t.equal((await app.inject({ url: '/projects', headers: auth })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/projects', headers: auth, payload: { name: 'observed' } })).statusCode, 200)

  t.equal(events.open.length, 2)
  t.match(events.open[0], { tenantId: tenantA, acquired: true, pool: { total: Number, idle: Number, waiting: 0 } })
  t.ok(events.open.every((event) => event.poolWaitMs >= 0), 'pool wait measured')
  t.match(events.query, [
    { tenantId: tenantA, command: 'SELECT', rowCount: 2, text: /^select .* from "projects"$/ },
    { tenantId: tenantA, command: 'INSERT', rowCount: 1, text: /^insert into "projects" .*\$1/ }
  ])
  t.ok(events.query.every((event) => event.durationMs > 0 && event.errorCode === undefined))
  t.match(events.finish, [{ tenantId: tenantA, outcome: 'committed' }, { tenantId: tenantA, outcome: 'committed' }])
  t.ok(events.finish.every((event) => typeof event.holdMs === 'number' && event.holdMs > 0 && !('reason' in event)), 'hold time, no reason on commit')
})

t.test('a rolled-back transaction says why; a failed query carries its SQLSTATE, never its message', async (t) => {
  const app = await buildApp(t, { pool, routes })
  const events = record(t)
  const auth = bearer(app, { tenant_id: tenantA })
  t.equal((await app.inject({ url: '/fails', headers: auth })).statusCode, 500)
  t.equal((await app.inject({ url: '/throws', headers: auth })).statusCode, 500)
  t.equal((await app.inject({ url: '/gone', headers: auth })).statusCode, 404)
  // The deferred unique key fails in the commit message: the commit is refused with a 409.
  t.equal((await app.inject({ method: 'POST', url: '/projects', headers: auth, payload: { name: 'a-1' } })).statusCode, 409)

  t.match(events.query[0], { command: null, rowCount: null, errorCode: '22012', text: 'SELECT 1 / 0' })
  t.notOk(JSON.stringify(events.query[0]).includes('division'), 'no error message')
  t.match(events.finish, [
    { outcome: 'rolled back', reason: 'error', errorCode: 'FST_TENANT_RLS_QUERY_FAILED' },
    { outcome: 'rolled back', reason: 'error', errorCode: 'ROUTE_FAILED' },
    { outcome: 'rolled back', reason: 'error status' },
    { outcome: 'rolled back', reason: 'commit refused', errorCode: 'FST_TENANT_RLS_COMMIT_CONFLICT' }
  ])
  t.equal(events.finish.length, 4)
})

t.test('withTenant publishes the same events; work that throws rolls back with reason \'work threw\'', async (t) => {
  const events = record(t)
  t.equal(await withTenant(pool, tenantA, async (tx) => (await tx.select().from(projects)).length), 2)
  await t.rejects(withTenant(pool, tenantA, async (tx) => {
    await tx.select().from(projects)
    throw new Error('job failed')
  }), { message: 'job failed' })
  t.equal(events.open.length, 2)
  t.match(events.query, [{ tenantId: tenantA, command: 'SELECT', rowCount: 2 }, { command: 'SELECT' }])
  t.match(events.finish, [{ tenantId: tenantA, outcome: 'committed' }, { tenantId: tenantA, outcome: 'rolled back', reason: 'work threw' }])
})

t.test('events carry neither query parameters nor rows', async (t) => {
  const app = await buildApp(t, { pool, routes })
  const events = record(t)
  const auth = bearer(app, { tenant_id: tenantA })
  await app.inject({ method: 'POST', url: '/projects', headers: auth, payload: { name: 'secret-parameter-value' } })
  const listed = await app.inject({ url: '/projects', headers: auth })
  t.match(listed.body, /secret-parameter-value/, 'the row exists and was read')
  const published = JSON.stringify(events)
  t.notOk(published.includes('secret-parameter-value'), 'no parameter or row value in any event')
  t.notOk(published.includes('a-1'), 'no row of the tenant in any event')
  t.equal(events.query.length, 2)
})

t.test('without a subscriber nothing is timed or built: the same clock reads as a route that never touches the database', async (t) => {
  const app = await buildApp(t, { pool, routes })
  const auth = bearer(app, { tenant_id: tenantA })
  // Every event is built right after a clock read, inside the same hasSubscribers branch: counting
  // the reads counts the work. Fastify itself reads the clock a fixed number of times per request.
  const clock = performance.now.bind(performance)
  let reads = 0
  performance.now = () => { reads++; return clock() }
  t.teardown(() => { performance.now = clock })
  async function readsFor (url: string): Promise<number> {
    const before = reads
    t.equal((await app.inject({ url, headers: auth })).statusCode, 200)
    return reads - before
  }
  const baseline = await readsFor('/static')
  t.equal(await readsFor('/projects'), baseline, 'a database request adds no clock read without a subscriber')
  const events = record(t)
  const observed = await readsFor('/projects')
  t.ok(observed > baseline, `a subscriber turns the timing on (${observed} reads against ${baseline})`)
  t.equal(events.finish.length, 1)
})

t.test('an exhausted pool: 503s log one warning per burst with the pool figures, and the recovery once', async (t) => {
  const small = db.appPool({ max: 1, connectionTimeoutMillis: 200 })
  const { lines, stream } = logStream()
  const app = await buildApp(t, { pool: small, routes, fastify: { logger: { level: 'info', stream } } })
  const auth = bearer(app, { tenant_id: tenantA })
  const warnings = (): LogLine[] => lines.filter((line) => line.level === 40)

  async function burst (requests: number): Promise<void> {
    const held = await small.connect()
    try {
      const answers = await Promise.all(Array.from({ length: requests }, () => app.inject({ url: '/projects', headers: auth })))
      t.same(answers.map((answer) => answer.statusCode), Array(requests).fill(503))
    } finally {
      held.release()
    }
  }

  await burst(3)
  t.equal(warnings().length, 1, 'one warning for three 503s')
  t.match(warnings()[0], {
    msg: /^fastify-tenant-rls: no database connection within connectionTimeoutMillis, answering 503.*fix: raise the pool's max/,
    pool: { total: 1, idle: 0, waiting: Number, max: 1 },
    connectionTimeoutMillis: 200,
    cause: 'timeout exceeded when trying to connect'
  })
  await burst(2)
  t.equal(warnings().length, 1, 'still one: no request got a connection in between')

  t.equal((await app.inject({ url: '/projects', headers: auth })).statusCode, 200)
  t.match(lines.filter((line) => /available again/.test(line.msg)), [{ level: 30, turnedAway: 5 }])
  await burst(2)
  t.equal(warnings().length, 2, 'a new burst after a success warns again')
  t.equal(new Set(warnings().map((line) => line.msg)).size, 1)
  await db.assertNoLeaks(t, small)
})

t.test('app.ready() names the plugin, the failure and the fix when the pool cannot connect', async (t) => {
  const closedPort = await freePort()
  const cases: Array<{ what: string, url: string, code: string, message: RegExp }> = [
    { what: 'connection refused', url: withUrl(db.url(), (url) => { url.hostname = '127.0.0.1'; url.port = String(closedPort) }), code: 'ECONNREFUSED', message: new RegExp(`connection was refused at 127\\.0\\.0\\.1:${closedPort}.*fix: start PostgreSQL, or correct the host and port`) },
    { what: 'wrong password', url: withUrl(db.url(), (url) => { url.password = 'not-the-password' }), code: '28P01', message: /password authentication failed for user .*fix: correct the password of the pool's role/ },
    { what: 'no such role', url: withUrl(db.url(), (url) => { url.username = 'no_such_role' }), code: '28P01', message: /"no_such_role" \(wrong password, or no such role\)/ },
    { what: 'missing database', url: withUrl(db.url(), (url) => { url.pathname = '/no_such_database' }), code: '3D000', message: /database "no_such_database" does not exist; fix: create the database \(and run the migrations\), or correct the database/ }
  ]
  for (const { what, url, code, message } of cases) {
    const failing = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 2000 })
    const app = Fastify()
    await app.register(fastifyJwt, { secret: JWT_SECRET })
    await app.register(fastifyTenantRls, { pool: failing })
    const error = await app.ready().then(() => undefined, (error: Error & { code?: string, cause?: { code?: string } }) => error)
    t.equal(error?.code, 'FST_TENANT_RLS_CONNECTION_FAILED', what)
    t.match(error?.message, /^fastify-tenant-rls could not connect to PostgreSQL: /, `${what}: names the plugin`)
    t.match(error?.message, message, `${what}: says what failed and the fix`)
    t.equal(error?.cause?.code, code, `${what}: the original error is the cause`)
    await app.close()
    await failing.end()
  }
})

function withUrl (url: string, change: (url: URL) => void): string {
  const parsed = new URL(url)
  change(parsed)
  return parsed.toString()
}

t.test('app.ready() warns, and still starts, when no policy reads the configured setting', async (t) => {
  async function startWith (setting: string | undefined): Promise<LogLine[]> {
    const { lines, stream } = logStream()
    const app = Fastify({ logger: { level: 'warn', stream } })
    await app.register(fastifyJwt, { secret: JWT_SECRET })
    await app.register(fastifyTenantRls, { pool, ...(setting === undefined ? {} : { setting }) })
    await app.ready()
    await app.close()
    return lines
  }
  const typo = await startWith('app.current_tenant')
  t.match(typo, [{
    level: 40,
    setting: 'app.current_tenant',
    msg: /no row-level security policy on a table the role may use reads the setting 'app\.current_tenant' \(the policies read 'app\.current_tenant_id'\)/,
    fix: /setting: 'app\.current_tenant_id'/
  }])
  t.equal(typo.length, 1)
  t.same(await startWith(undefined), [], 'the setting the policies read: no warning')
})
