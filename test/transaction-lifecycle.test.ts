// Behaviours 3, 4, 6, 7 and 9 of the core: when a request commits and when it rolls back, and that
// its connection is released exactly once on every path, including the ones that skip Fastify's
// usual hooks (disconnect, timeout, hijack, app.close, a killed backend).
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { sql } from 'drizzle-orm'
import type { FastifyRequest } from 'fastify'
import t from 'tap'
import { createTestDatabase, eventually } from './helpers/database.js'
import { bearer, buildApp, committedNames, createProjectsTable, projects } from './helpers/fixture.js'
import { gate } from './helpers/gate.js'
import type { Gate } from './helpers/gate.js'

const db = await createTestDatabase(t)
const { tenantA } = await createProjectsTable(db)

const pool = db.appPool()
let checkouts = 0
pool.on('acquire', () => { checkouts++ })
t.afterEach(async (t) => {
  await db.assertNoLeaks(t, pool)
  await db.admin.query("DELETE FROM projects WHERE name NOT IN ('a-1', 'a-2', 'b-1')")
})

const insert = async (request: FastifyRequest, name: string): Promise<void> => {
  await request.db.insert(projects).values({ name, tenantId: String(request.tenantId) })
}

t.test('success commits; a throw, a returned 4xx or an error handler turning it into 200 rolls back', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/ok', async (request) => { await insert(request, 'committed'); return { ok: true } })
      app.post('/throw', async (request) => { await insert(request, 'thrown'); throw new Error('boom') })
      app.post('/422', async (request, reply) => { await insert(request, 'rejected'); return reply.code(422).send({ invalid: true }) })
      app.register(async (scope) => {
        scope.setErrorHandler(async (_error, _request, reply) => reply.code(200).send({ swallowed: true }))
        scope.post('/swallowed', async (request) => { await insert(request, 'swallowed'); throw new Error('hidden') })
      })
    }
  })
  const headers = bearer(app, { tenant_id: tenantA })
  t.equal((await app.inject({ method: 'POST', url: '/ok', headers })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/throw', headers })).statusCode, 500)
  t.equal((await app.inject({ method: 'POST', url: '/422', headers })).statusCode, 422)
  const swallowed = await app.inject({ method: 'POST', url: '/swallowed', headers })
  t.same(swallowed.json(), { swallowed: true })
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'committed'], 'only the successful request committed')
})

t.test('a body that fails validation is refused before any connection is taken', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/validated', {
        schema: { body: { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1 } } } }
      }, async (request) => { await insert(request, 'validated'); return { ok: true } })
    }
  })
  const before = checkouts
  const res = await app.inject({ method: 'POST', url: '/validated', headers: bearer(app, { tenant_id: tenantA }), payload: { name: '' } })
  t.equal(res.statusCode, 400)
  t.equal(checkouts, before, 'no connection was taken')
})

t.test('a route that never uses request.db takes no connection', async (t) => {
  const app = await buildApp(t, { pool, routes (app) { app.get('/static', async () => ({ ok: true })) } })
  const before = checkouts
  t.equal((await app.inject({ url: '/static', headers: bearer(app, { tenant_id: tenantA }) })).statusCode, 200)
  t.equal(checkouts, before)
})

t.test('concurrent first queries share one connection and one transaction', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.get('/parallel', async (request) => {
        const pids = await Promise.all([1, 2, 3].map(() => request.db.execute<{ pid: number, xid: string }>(sql`SELECT pg_backend_pid() AS pid, txid_current()::text AS xid`)))
        return { pids: new Set(pids.map((r) => r.rows[0]?.pid)).size, xids: new Set(pids.map((r) => r.rows[0]?.xid)).size }
      })
    }
  })
  const before = checkouts
  t.same((await app.inject({ url: '/parallel', headers: bearer(app, { tenant_id: tenantA }) })).json(), { pids: 1, xids: 1 })
  t.equal(checkouts, before + 1)
})

t.test('a COMMIT that fails answers 409, persists nothing, and the pool recovers', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      // The unique key is DEFERRABLE INITIALLY DEFERRED: the duplicate is only detected at COMMIT.
      app.post('/duplicate', async (request) => {
        await insert(request, 'fresh')
        await insert(request, 'a-1')
        return { ok: true }
      })
      app.get('/count', async (request) => (await request.db.select().from(projects)).length)
    }
  })
  const headers = bearer(app, { tenant_id: tenantA })
  const res = await app.inject({ method: 'POST', url: '/duplicate', headers })
  t.equal(res.statusCode, 409, 'never a 2xx for work that was not committed')
  t.equal(res.json().code, 'FST_TENANT_RLS_CONFLICT')
  t.notMatch(res.body, /projects_tenant_name_key|a-1|duplicate key/, 'constraint names and values stay server-side')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
  t.equal((await app.inject({ url: '/count', headers })).json(), 2, 'the next request works')
})

t.test('a route that swallows a failed query cannot answer 2xx: COMMIT fails and nothing is kept', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/swallow', async (request) => {
        await insert(request, 'before-the-failure')
        // The failed statement aborts the transaction; the route pretends nothing happened.
        await request.db.execute(sql`SELECT 1 / 0`).catch(() => {})
        return { ok: true }
      })
    }
  })
  const res = await app.inject({ method: 'POST', url: '/swallow', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_TENANT_RLS_COMMIT_FAILED')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
})

t.test('a route that only reads the request.db handle takes no connection', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) { app.get('/touch', async (request) => ({ handle: typeof request.db.select })) }
  })
  const before = checkouts
  t.same((await app.inject({ url: '/touch', headers: bearer(app, { tenant_id: tenantA }) })).json(), { handle: 'function' })
  t.equal(checkouts, before)
})

t.test('database error details never reach the client', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.get('/broken', async (request) => request.db.execute(sql`SELECT secret_column FROM projects WHERE name = ${'needle'}`))
    }
  })
  const res = await app.inject({ url: '/broken', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_TENANT_RLS_QUERY_FAILED')
  t.notMatch(res.body, /secret_column|needle|SELECT/i)
})

t.test('request.db used after the reply is refused, never a new transaction', async (t) => {
  // Route code that keeps using request.db after it has answered: once it had used it before
  // (its transaction has finished), once for the first time (no transaction may begin any more).
  for (const usedBefore of [true, false]) {
    const late = gate<unknown>()
    const app = await buildApp(t, {
      pool,
      routes (app) {
        app.get('/fire-and-forget', async (request) => {
          if (usedBefore) await request.db.select().from(projects)
          setImmediate(() => { insert(request, 'late').then(() => late.open('ran'), late.open) })
          return { ok: true }
        })
      }
    })
    const before = checkouts
    t.equal((await app.inject({ url: '/fire-and-forget', headers: bearer(app, { tenant_id: tenantA }) })).statusCode, 200)
    const error = await late.promise as Error & { cause?: { code?: string } }
    t.equal(error.cause?.code, 'FST_TENANT_RLS_TRANSACTION_CLOSED', `used before: ${usedBefore}`)
    t.equal(checkouts, before + (usedBefore ? 1 : 0), 'no connection is taken after the reply')
    t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
  }
})

/** Starts a route that writes, reports its backend pid, then waits on `proceed` before writing again. */
function pausingRoute (name: string, proceed: Gate, paused: Gate<number>, outcome: Gate<string>) {
  return async function handler (request: FastifyRequest) {
    await insert(request, `${name}-before`)
    const { rows } = await request.db.execute<{ pid: number }>(sql`SELECT pg_backend_pid() AS pid`)
    paused.open(Number(rows[0]?.pid))
    await proceed.promise
    try {
      await insert(request, `${name}-after`)
      outcome.open('second write ran')
    } catch (error) {
      outcome.open(String((error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message))
      throw error
    }
    return { ok: true }
  }
}

async function listening (app: Awaited<ReturnType<typeof buildApp>>): Promise<number> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return (app.server.address() as AddressInfo).port
}

t.test('a client that disconnects mid-handler gets its transaction rolled back and its connection released', async (t) => {
  const proceed = gate()
  const paused = gate<number>()
  const outcome = gate<string>()
  const app = await buildApp(t, { pool, routes (app) { app.post('/slow', pausingRoute('disconnect', proceed, paused, outcome)) } })
  const port = await listening(app)
  const req = httpRequest({ port, method: 'POST', path: '/slow', headers: bearer(app, { tenant_id: tenantA }) })
  req.on('error', () => {})
  req.end()
  await paused.promise
  req.destroy()
  await eventually(() => pool.idleCount === pool.totalCount, 'the connection to come back after the disconnect')
  proceed.open()
  t.equal(await outcome.promise, 'FST_TENANT_RLS_TRANSACTION_CLOSED', 'the handler cannot write after the rollback')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], 'nothing of the aborted request was committed')
})

t.test('a handler timeout answers with an error and rolls back', async (t) => {
  const proceed = gate()
  const paused = gate<number>()
  const outcome = gate<string>()
  const app = await buildApp(t, {
    pool,
    routes (app) { app.post('/slow', { handlerTimeout: 100 }, pausingRoute('timeout', proceed, paused, outcome)) }
  })
  const res = await app.inject({ method: 'POST', url: '/slow', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(res.statusCode, 503)
  proceed.open()
  t.equal(await outcome.promise, 'FST_TENANT_RLS_TRANSACTION_CLOSED')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
})

t.test('a hijacked reply rolls back (write with app.withTenant instead) and releases', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.get('/hijack', async (request, reply) => {
        await insert(request, 'hijacked')
        reply.hijack()
        reply.raw.end('streamed by hand')
      })
    }
  })
  const res = await app.inject({ url: '/hijack', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(res.body, 'streamed by hand')
  await eventually(() => pool.idleCount === pool.totalCount, 'the hijacked request to release its connection')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
})

t.test('app.close() with a request in flight releases its connection exactly once', async (t) => {
  const proceed = gate()
  const paused = gate<number>()
  const outcome = gate<string>()
  const app = await buildApp(t, { pool, routes (app) { app.post('/slow', pausingRoute('closing', proceed, paused, outcome)) } })
  const port = await listening(app)
  const response = new Promise<number>((resolve) => {
    const req = httpRequest({ port, method: 'POST', path: '/slow', headers: bearer(app, { tenant_id: tenantA }) }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', () => resolve(0))
    req.end()
  })
  await paused.promise
  const closed = app.close()
  proceed.open()
  const status = await response
  await closed
  const names = await committedNames(db, tenantA)
  if (status === 200) {
    t.same(names, ['a-1', 'a-2', 'closing-after', 'closing-before'], 'answered 200, so it committed')
  } else {
    t.same(names, ['a-1', 'a-2'], `answered ${status}, so nothing was committed`)
  }
  t.equal(pool.idleCount, pool.totalCount)
})

t.test('a backend killed while the request holds it gives a 5xx, a destroyed client and a live process', async (t) => {
  for (const phase of ['idle in transaction', 'idle_in_transaction_session_timeout'] as const) {
    const proceed = gate()
    const paused = gate<number>()
    const outcome = gate<string>()
    const timeoutPool = db.appPool({ options: '-c idle_in_transaction_session_timeout=200' })
    const target = phase === 'idle in transaction' ? pool : timeoutPool
    const app = await buildApp(t, { pool: target, routes (app) { app.post('/slow', pausingRoute('killed', proceed, paused, outcome)) } })
    const pending = app.inject({ method: 'POST', url: '/slow', headers: bearer(app, { tenant_id: tenantA }) })
    const pid = await paused.promise
    if (phase === 'idle in transaction') await db.admin.query('SELECT pg_terminate_backend($1)', [pid])
    await eventually(async () => (await db.admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 0, `backend ${pid} to be gone (${phase})`)
    proceed.open()
    const res = await pending
    t.equal(res.statusCode, 500, `${phase}: 5xx`)
    t.equal(res.json().code, 'FST_TENANT_RLS_QUERY_FAILED', `${phase}: stable code`)
    t.not(await outcome.promise, 'second write ran')
    await eventually(() => target.idleCount === target.totalCount, 'the dead client to be removed')
    t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], `${phase}: nothing committed`)
    await db.assertNoLeaks(t, target)
  }
})

t.test('an exhausted pool answers 503 with Retry-After once connectionTimeoutMillis passes', async (t) => {
  const small = db.appPool({ max: 1, connectionTimeoutMillis: 150 })
  const proceed = gate()
  const paused = gate<number>()
  const outcome = gate<string>()
  const app = await buildApp(t, {
    pool: small,
    routes (app) {
      app.post('/slow', pausingRoute('holder', proceed, paused, outcome))
      app.get('/read', async (request) => (await request.db.select().from(projects)).length)
    }
  })
  const headers = bearer(app, { tenant_id: tenantA })
  const holder = app.inject({ method: 'POST', url: '/slow', headers })
  await paused.promise
  const starved = await app.inject({ url: '/read', headers })
  t.equal(starved.statusCode, 503)
  t.equal(starved.json().code, 'FST_TENANT_RLS_DATABASE_UNAVAILABLE')
  t.equal(starved.headers['retry-after'], '1')
  proceed.open()
  t.equal((await holder).statusCode, 200)
  t.equal((await app.inject({ url: '/read', headers })).json(), 4, 'the pool serves again')
  await db.assertNoLeaks(t, small)
})
