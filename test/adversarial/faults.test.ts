// Faults in every phase of a tenant request: the opening fails (connection cut as BEGIN is sent,
// set_config refused), the handler throws, COMMIT fails (deferred unique key, serialization
// failure), the backend is killed mid-request, the client goes away, the pool is exhausted, the app
// closes mid-flight. Each route has already written a row for its tenant when the fault strikes;
// each case asserts the reply, that nothing at all was committed, that no connection leaked, and
// (by reaching its end) that the process survived.
import { request as httpRequest } from 'node:http'
import { sql } from 'drizzle-orm'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type pg from 'pg'
import t from 'tap'
import type { Test } from 'tap'
import { createTestDatabase, eventually } from '../helpers/database.js'
import { attackApp, callAs, committed, createWorld, documents, gate } from './documents.js'
import { startFaultProxy } from './fault-proxy.js'
import { dbOf } from './isolation-cases.js'

const db = await createTestDatabase(t)
const { tenants: [a, b] } = await createWorld(db)

/** Writes a row for the request's tenant, with a slug of its own unless told otherwise. */
async function write (request: FastifyRequest, slug = `fault-${Math.random()}`): Promise<void> {
  await dbOf(request).insert(documents).values({ tenantId: request.tenantId ?? '', code: slug, slug, body: 'must not persist' })
}

/** Calls `write` as A and asserts the reply, that nothing at all was committed, and no leak. */
async function refusedWithNothingCommitted (t: Test, app: FastifyInstance, pool: pg.Pool, status: number, reply: Record<string, string>): Promise<void> {
  const before = await committed(db)
  const response = await callAs(app, a, 'write')
  t.equal(response.statusCode, status, 'status')
  t.has(response.json(), reply, 'reply')
  t.same(await committed(db), before, 'nothing was committed')
  await db.assertNoLeaks(t, pool)
}

async function backendPid (request: FastifyRequest): Promise<number> {
  const { rows } = await dbOf(request).execute<{ pid: number }>(sql`SELECT pg_backend_pid() AS pid`)
  return Number(rows[0]?.pid)
}

t.test('the connection is cut as the opening (BEGIN) is sent: 500, nothing sent reached the server', async (t) => {
  const proxy = await startFaultProxy(t, db.url())
  const pool = db.appPool({ connectionString: proxy.route(db.url()), max: 1 })
  pool.on('error', () => {})
  const { app } = await attackApp(t, pool, { write: (request) => write(request) })
  t.equal((await callAs(app, a, 'write')).statusCode, 200, 'warm-up: one pooled connection through the relay')
  const before = await committed(db)
  proxy.cutOnNextWrite()
  const response = await callAs(app, a, 'write')
  t.equal(response.statusCode, 500)
  t.equal(response.json().code, 'FST_TENANT_RLS_QUERY_FAILED')
  t.equal(proxy.cuts, 1, 'the pooled connection was cut on its first write')
  t.same(await committed(db), before, 'nothing was committed')
  t.equal((await callAs(app, b, 'write')).statusCode, 200, 'the pool replaced the dead connection')
  await db.assertNoLeaks(t, pool)
})

t.test('set_config is refused (EXECUTE revoked): 500, nothing committed, the route query never ran', async (t) => {
  const pool = db.appPool({ max: 1 })
  const { app, sqlStates } = await attackApp(t, pool, { write: (request) => write(request) })
  await db.admin.query('REVOKE EXECUTE ON FUNCTION set_config(text, text, boolean) FROM PUBLIC')
  try {
    await refusedWithNothingCommitted(t, app, pool, 500, { code: 'FST_TENANT_RLS_QUERY_FAILED' })
    t.same(sqlStates, ['42501'], 'permission denied for set_config')
  } finally {
    await db.admin.query('GRANT EXECUTE ON FUNCTION set_config(text, text, boolean) TO PUBLIC')
  }
})

t.test('the handler throws after writing: 500, nothing committed', async (t) => {
  const pool = db.appPool({ max: 1 })
  const { app } = await attackApp(t, pool, {
    async write (request) {
      await write(request)
      throw new Error('route bug')
    }
  })
  await refusedWithNothingCommitted(t, app, pool, 500, { message: 'route bug' })
})

t.test('COMMIT fails on the deferred (tenant_id, slug) key: 409, nothing committed', async (t) => {
  const pool = db.appPool({ max: 1 })
  const { app } = await attackApp(t, pool, {
    async write (request) {
      await write(request, 'unrelated-and-valid')
      // 'first' is taken by this tenant's INV-1 (and by every other tenant's): checked only at COMMIT.
      await dbOf(request).insert(documents).values({ tenantId: request.tenantId ?? '', code: 'DUP', slug: 'first', body: 'dup' })
      return 'written'
    }
  })
  // Nothing committed: not even the valid row written before the duplicate.
  await refusedWithNothingCommitted(t, app, pool, 409, { code: 'FST_TENANT_RLS_CONFLICT' })
})

t.test('COMMIT fails with a serialization failure (write skew under SERIALIZABLE): 409 for the loser, only the winner committed', async (t) => {
  const pool = db.appPool({ max: 2, options: '-c default_transaction_isolation=serializable' })
  const bothRead = gate()
  const secondWrote = gate()
  const firstDone = gate()
  let reads = 0
  const { app } = await attackApp(t, pool, {
    async skew (request) {
      const database = dbOf(request)
      // Each reads the tenant's documents, then adds one: a decision the other's insert invalidates.
      const seen = await database.select().from(documents)
      if (++reads === 2) bothRead.open()
      await bothRead.promise
      await write(request, `skew-${seen.length}-${Math.random()}`)
      // Both writes happen before either COMMIT, so the conflict can only surface at COMMIT.
      if (request.headers['x-second'] === undefined) {
        await secondWrote.promise
      } else {
        secondWrote.open()
        await firstDone.promise
      }
      return 'written'
    }
  })
  const before = await committed(db)
  const first = callAs(app, a, 'skew')
  const second = callAs(app, a, 'skew', { 'x-second': '1' })
  const winner = await first
  firstDone.open()
  const loser = await second
  t.equal(winner.statusCode, 200)
  t.equal(loser.statusCode, 409)
  t.equal(loser.json().code, 'FST_TENANT_RLS_RETRYABLE_CONFLICT')
  const after = await committed(db)
  t.equal(after.documents.length, before.documents.length + 1, "only the winner's row was committed")
  await db.assertNoLeaks(t, pool)
})

t.test('the backend is killed mid-request: 500, nothing committed, the client destroyed, the pool recovers', async (t) => {
  const pool = db.appPool({ max: 1 })
  const reached = gate()
  const resume = gate()
  let pid = 0
  const { app } = await attackApp(t, pool, {
    async write (request) {
      await write(request)
      pid = await backendPid(request)
      reached.open()
      await resume.promise
      await write(request)
      return 'written'
    },
    stamp: async (request) => request.tenantId
  })
  const before = await committed(db)
  const pending = callAs(app, a, 'write')
  await reached.promise
  await db.admin.query('SELECT pg_terminate_backend($1)', [pid])
  await eventually(async () => (await db.admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 0, 'the backend to be gone')
  resume.open()
  const response = await pending
  t.equal(response.statusCode, 500)
  t.same(await committed(db), before, 'nothing was committed')
  t.equal((await callAs(app, b, 'stamp')).statusCode, 200, 'the next request works')
  await db.assertNoLeaks(t, pool)
})

t.test('the client disconnects mid-request: rolled back and released at once; the route is refused afterwards', async (t) => {
  const pool = db.appPool({ max: 1 })
  const reached = gate()
  const resume = gate()
  let afterwards: unknown
  const { app } = await attackApp(t, pool, {
    async write (request) {
      await write(request)
      reached.open()
      await resume.promise
      // drizzle wraps the refusal; the plugin's error is its cause.
      afterwards = await write(request).then(() => 'ran', (error: Error) => (error.cause as { code?: string } | undefined)?.code)
      return 'written'
    }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const before = await committed(db)
  const token = app.jwt.sign({ tenant_id: a })
  const outgoing = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/write', headers: { authorization: `Bearer ${token}` } })
  outgoing.on('error', () => {})
  outgoing.end()
  await reached.promise
  outgoing.destroy()
  await eventually(() => pool.idleCount === 1, 'the connection to be released after the disconnect')
  t.same(await committed(db), before, 'nothing was committed')
  resume.open()
  await eventually(() => afterwards !== undefined, 'the route to try its next query')
  t.equal(afterwards, 'FST_TENANT_RLS_TRANSACTION_CLOSED', 'the route could not write after the disconnect')
  t.same(await committed(db), before, 'still nothing committed')
  await db.assertNoLeaks(t, pool)
})

t.test('the pool is exhausted: 503 with Retry-After, and the holder still commits', async (t) => {
  const pool = db.appPool({ max: 1, connectionTimeoutMillis: 200 })
  const reached = gate()
  const resume = gate()
  const { app } = await attackApp(t, pool, {
    async hold (request) {
      await write(request, 'held-slug')
      reached.open()
      await resume.promise
      return 'written'
    },
    write: (request) => write(request)
  })
  const before = await committed(db)
  const holder = callAs(app, a, 'hold')
  await reached.promise
  const refused = await callAs(app, b, 'write')
  t.equal(refused.statusCode, 503)
  t.equal(refused.headers['retry-after'], '1')
  t.equal(refused.json().code, 'FST_TENANT_RLS_DATABASE_UNAVAILABLE')
  resume.open()
  t.equal((await holder).statusCode, 200)
  const after = await committed(db)
  t.same(after.documents.filter((row) => row.slug === 'held-slug').map((row) => row.tenant_id), [a], "only the holder's row was committed")
  t.equal(after.documents.length, before.documents.length + 1)
  await db.assertNoLeaks(t, pool)
})

t.test('app.close() mid-flight: the transaction is rolled back, the route refused, nothing committed', async (t) => {
  const pool = db.appPool({ max: 1 })
  const reached = gate()
  const resume = gate()
  const { app } = await attackApp(t, pool, {
    async write (request) {
      await write(request)
      reached.open()
      await resume.promise
      await write(request)
      return 'written'
    }
  })
  const before = await committed(db)
  const pending = callAs(app, a, 'write')
  await reached.promise
  const closing = app.close()
  await eventually(() => pool.idleCount === 1, 'onClose to roll back and release the connection')
  resume.open()
  const response = await pending
  await closing
  t.equal(response.statusCode, 500)
  t.equal(response.json().code, 'FST_TENANT_RLS_TRANSACTION_CLOSED')
  t.same(await committed(db), before, 'nothing was committed')
  await db.assertNoLeaks(t, pool)
})
