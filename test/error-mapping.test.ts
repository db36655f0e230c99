// Section 5 of issue 9: a SQLSTATE means the same reply wherever it surfaces (a route's query or
// COMMIT): 409 for a unique or foreign key, 409 + retryable for a serialization failure, 403 for a
// row a policy refuses, 503 for a statement or lock timeout, 500 for the rest. The body carries no
// SQL, constraint name or value; the SQLSTATE stays in error.cause.code and in the log as sqlState.
// And the savepoint pattern: a caught error is survivable only inside request.db.transaction().
import { randomUUID } from 'node:crypto'
import { Writable } from 'node:stream'
import { sql } from 'drizzle-orm'
import { pgTable, primaryKey, text, uuid } from 'drizzle-orm/pg-core'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import { createTestDatabase } from './helpers/database.js'
import { bearer, buildApp, committedNames, createProjectsTable } from './helpers/fixture.js'
import { gate } from './helpers/gate.js'

const db = await createTestDatabase(t)
const { tenantA, tenantB } = await createProjectsTable(db)

// Keys checked at once (not deferred), so a violation surfaces in the route's own query.
const tags = pgTable('tags', {
  tenantId: uuid('tenant_id').notNull(),
  name: text('name').notNull()
}, (table) => [primaryKey({ columns: [table.tenantId, table.name] })])

const POLICY = "tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
await db.asOwner(`
  CREATE TABLE tags (tenant_id uuid NOT NULL REFERENCES tenants (id), name text NOT NULL, CONSTRAINT tags_secret_pkey PRIMARY KEY (tenant_id, name));
  ALTER TABLE tags ENABLE ROW LEVEL SECURITY;
  ALTER TABLE tags FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON tags USING (${POLICY}) WITH CHECK (${POLICY});
  GRANT SELECT, INSERT, UPDATE, DELETE ON tags TO ${db.appRole};
`)
await db.admin.query("INSERT INTO tags (tenant_id, name) VALUES ($1, 'taken-name'), ($2, 'b-tag')", [tenantA, tenantB])

async function committedTags (): Promise<string[]> {
  const { rows } = await db.admin.query<{ tenant_id: string, name: string }>('SELECT tenant_id, name FROM tags ORDER BY tenant_id, name')
  return rows.map((row) => `${row.tenant_id === tenantA ? 'A' : row.tenant_id === tenantB ? 'B' : row.tenant_id}:${row.name}`).sort()
}

interface SeenError { code: unknown, retryable: unknown, sqlState: unknown, causeCode: unknown }

/** An app whose log lines and presented errors (as an error handler would see them) the test can read. */
async function observedApp (t: Test, pool: ReturnType<typeof db.appPool>, routes: (app: FastifyInstance) => void, lockTimeout?: number) {
  const lines: Array<Record<string, unknown>> = []
  const seen: SeenError[] = []
  const stream = new Writable({
    write (chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)))
      done()
    }
  })
  const app = await buildApp(t, {
    pool,
    fastify: { logger: { level: 'info', stream } },
    ...(lockTimeout === undefined ? {} : { options: { lockTimeout } }),
    routes (app) {
      // Added after the plugin's own onError hook, so it sees the error as presented.
      app.addHook('onError', async function recordPresentedError (_request, _reply, error) {
        const presented = error as Error & { code?: unknown, retryable?: unknown, sqlState?: unknown, cause?: { code?: unknown } }
        seen.push({ code: presented.code, retryable: presented.retryable, sqlState: presented.sqlState, causeCode: presented.cause?.code })
      })
      routes(app)
    }
  })
  return { app, lines, seen }
}
const pool = db.appPool()
const headersA = (app: FastifyInstance): Record<string, string> => bearer(app, { tenant_id: tenantA })
const insertTag = (request: FastifyRequest, tenantId: string, name: string) => request.db.insert(tags).values({ tenantId, name })

t.test('each SQLSTATE a client can act on gets its status and code, in a route query; nothing is committed', async (t) => {
  const unknownTenant = randomUUID()
  const { app, lines, seen } = await observedApp(t, pool, (app) => {
    app.post('/unique', async (request) => { await insertTag(request, tenantA, 'fresh-1'); await insertTag(request, tenantA, 'taken-name'); return 'kept' })
    app.post('/foreign-key', async (request) => { await insertTag(request, unknownTenant, 'orphan'); return 'kept' })
    app.post('/other-tenant', async (request) => { await insertTag(request, tenantA, 'fresh-2'); await insertTag(request, tenantB, 'planted'); return 'kept' })
    app.post('/statement-timeout', async (request) => {
      await insertTag(request, tenantA, 'fresh-3')
      await request.db.execute(sql`SET LOCAL statement_timeout = 20`)
      await request.db.execute(sql`SELECT pg_sleep(5)`)
      return 'kept'
    })
    app.post('/row-security-off', async (request) => {
      // Also 42501, but a deployment problem rather than the client's: it stays a 500.
      await request.db.execute(sql`SET LOCAL row_security = off`)
      return request.db.select().from(tags)
    })
  })
  const cases: Array<[string, Record<string, string>, number, string, string, boolean | undefined]> = [
    ['/unique', headersA(app), 409, 'FST_TENANT_RLS_CONFLICT', '23505', false],
    ['/foreign-key', bearer(app, { tenant_id: unknownTenant }), 409, 'FST_TENANT_RLS_CONFLICT', '23503', false],
    ['/other-tenant', headersA(app), 403, 'FST_TENANT_RLS_ROW_FORBIDDEN', '42501', false],
    ['/statement-timeout', headersA(app), 503, 'FST_TENANT_RLS_DATABASE_TIMEOUT', '57014', true],
    ['/row-security-off', headersA(app), 500, 'FST_TENANT_RLS_QUERY_FAILED', '42501', undefined]
  ]
  const before = await committedTags()
  for (const [url, headers, status, code, sqlState, retryable] of cases) {
    seen.length = 0
    const res = await app.inject({ method: 'POST', url, headers })
    t.equal(res.statusCode, status, `${url}: status`)
    t.equal(res.json().code, code, `${url}: code`)
    t.same(Object.keys(res.json()).sort(), ['code', 'error', 'message', 'statusCode'], `${url}: the body has the usual four fields only`)
    t.notMatch(res.body, /tags|secret_pkey|taken-name|planted|orphan|pg_sleep|insert|select|23505|23503|42501|57014|violates|policy/i, `${url}: no SQL, constraint, value or SQLSTATE in the body`)
    t.same(seen, [{ code, retryable, sqlState, causeCode: sqlState }], `${url}: error.cause.code and error.sqlState hold ${sqlState}`)
    const logged = lines.find((line) => (line.err as { code?: unknown } | undefined)?.code === code)
    t.equal((logged?.err as { sqlState?: unknown } | undefined)?.sqlState, sqlState, `${url}: the log line carries sqlState`)
    lines.length = 0
  }
  t.same(await committedTags(), before, 'nothing was committed by any of them')
})

t.test('a lock timeout is a 503 DATABASE_TIMEOUT', async (t) => {
  const { app, seen } = await observedApp(t, pool, (app) => {
    app.post('/locked', async (request) => request.db.update(tags).set({ name: 'renamed' }).where(sql`name = 'taken-name'`))
  }, 50)
  const holder = await db.admin.connect()
  t.teardown(() => holder.release())
  await holder.query('BEGIN')
  await holder.query("SELECT * FROM tags WHERE name = 'taken-name' FOR UPDATE")
  const res = await app.inject({ method: 'POST', url: '/locked', headers: headersA(app) })
  await holder.query('ROLLBACK')
  t.equal(res.statusCode, 503)
  t.equal(res.json().code, 'FST_TENANT_RLS_DATABASE_TIMEOUT')
  t.same(seen.map((error) => error.sqlState), ['55P03'])
  t.same(await committedTags(), ['A:taken-name', 'B:b-tag'].sort(), 'the row is unchanged')
})

t.test('a serialization failure in a route query is a 409 RETRYABLE_CONFLICT with error.retryable', async (t) => {
  const repeatable = db.appPool({ max: 1, options: '-c default_transaction_isolation=repeatable\\ read' })
  const snapshotTaken = gate()
  const otherCommitted = gate()
  const { app, seen } = await observedApp(t, repeatable, (app) => {
    app.post('/stale-update', async (request) => {
      await request.db.select().from(tags)
      snapshotTaken.open()
      await otherCommitted.promise
      // The row changed after this transaction's snapshot: PostgreSQL refuses the update (40001).
      return request.db.update(tags).set({ name: 'stale-write' }).where(sql`name = 'taken-name'`)
    })
  })
  const reply = app.inject({ method: 'POST', url: '/stale-update', headers: headersA(app) })
  await snapshotTaken.promise
  await db.admin.query("UPDATE tags SET name = 'concurrent-write' WHERE name = 'taken-name'")
  otherCommitted.open()
  const res = await reply
  t.equal(res.statusCode, 409)
  t.equal(res.json().code, 'FST_TENANT_RLS_RETRYABLE_CONFLICT')
  t.same(seen, [{ code: 'FST_TENANT_RLS_RETRYABLE_CONFLICT', retryable: true, sqlState: '40001', causeCode: '40001' }])
  t.same(await committedTags(), ['A:concurrent-write', 'B:b-tag'].sort(), 'only the concurrent write was kept')
  await db.admin.query("UPDATE tags SET name = 'taken-name' WHERE name = 'concurrent-write'")
  await db.assertNoLeaks(t, repeatable)
})

t.test('a deferred key failing at COMMIT gets the same reply as in a route query, with sqlState logged', async (t) => {
  const { app, lines, seen } = await observedApp(t, pool, (app) => {
    // projects (tenant_id, name) is DEFERRABLE INITIALLY DEFERRED: the duplicate surfaces at COMMIT.
    app.post('/deferred', async (request) => request.db.execute(sql`INSERT INTO projects (tenant_id, name) VALUES (${tenantA}, 'a-1')`).then(() => 'kept'))
  })
  const res = await app.inject({ method: 'POST', url: '/deferred', headers: headersA(app) })
  t.equal(res.statusCode, 409)
  t.equal(res.json().code, 'FST_TENANT_RLS_CONFLICT')
  t.same(seen, [{ code: 'FST_TENANT_RLS_CONFLICT', retryable: false, sqlState: '23505', causeCode: '23505' }])
  const logged = lines.find((line) => (line.err as { code?: unknown } | undefined)?.code === 'FST_TENANT_RLS_CONFLICT')
  t.equal((logged?.err as { sqlState?: unknown } | undefined)?.sqlState, '23505')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
})

t.test('catch-and-continue works inside a savepoint; without one the caught error fails the COMMIT', async (t) => {
  const { app } = await observedApp(t, pool, (app) => {
    app.post('/with-savepoint', async (request) => {
      try {
        await request.db.transaction(async (savepoint) => { await savepoint.insert(tags).values({ tenantId: tenantA, name: 'taken-name' }) })
      } catch (error) {
        if ((error as { cause?: { code?: unknown } }).cause?.code !== '23505') throw error
      }
      await insertTag(request, tenantA, 'after-savepoint')
      return 'kept'
    })
    app.post('/without-savepoint', async (request) => {
      await insertTag(request, tenantA, 'before-the-catch')
      try {
        await insertTag(request, tenantA, 'taken-name')
      } catch (error) {
        if ((error as { cause?: { code?: unknown } }).cause?.code !== '23505') throw error
      }
      // The failed statement aborted the whole transaction: this query and the COMMIT fail too.
      await insertTag(request, tenantA, 'after-the-catch').catch(() => {})
      return 'kept'
    })
  })
  const saved = await app.inject({ method: 'POST', url: '/with-savepoint', headers: headersA(app) })
  t.equal(saved.statusCode, 200)
  t.same(await committedTags(), ['A:after-savepoint', 'A:taken-name', 'B:b-tag'].sort(), 'the work after the savepoint was committed')
  const lost = await app.inject({ method: 'POST', url: '/without-savepoint', headers: headersA(app) })
  t.equal(lost.statusCode, 500)
  t.equal(lost.json().code, 'FST_TENANT_RLS_COMMIT_FAILED')
  t.same(await committedTags(), ['A:after-savepoint', 'A:taken-name', 'B:b-tag'].sort(), 'nothing of the second request was committed')
  await db.admin.query("DELETE FROM tags WHERE name = 'after-savepoint'")
})

t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })
