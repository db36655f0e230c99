// Issue 5's round-trip target, counted on the wire of a real PostgreSQL: a one-query request takes
// two round trips (the open rides with the first query, then the commit message), a route that
// never uses request.db takes no connection, and a failed open stops the first query before it runs.
import { eq, sql } from 'drizzle-orm'
import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { withTenant } from 'fastify-tenant-rls'
import { createTestDatabase } from './helpers/database.js'
import { bearer, buildApp, createProjectsTable, projects } from './helpers/fixture.js'
import { recordParses, watchWireTraffic } from './helpers/wire-traffic.js'
import type { RecordedParse } from './helpers/wire-traffic.js'

const db = await createTestDatabase(t)
const { tenantA } = await createProjectsTable(db)
await db.asOwner(`
  CREATE TABLE audit_log (entry text NOT NULL);
  GRANT SELECT, INSERT ON audit_log TO ${db.appRole};
`)

const pool = db.appPool()
const traffic = watchWireTraffic(pool)
const app = await buildApp(t, {
  pool,
  routes (app) {
    app.get('/names', async (request) => {
      const rows = await request.db.select({ name: projects.name }).from(projects).orderBy(projects.name).limit(20)
      return rows.map((row) => row.name)
    })
    app.get('/all', async (request) => (await request.db.select({ name: projects.name }).from(projects)).length)
    app.get('/two-statements', async (request) => {
      const results = await request.db.execute(sql.raw('SELECT 1 AS one; SELECT 2 AS two')) as unknown as unknown[]
      return { results: results.length }
    })
    app.get('/no-database', async (request) => ({ tenant: request.tenantId }))
    app.get('/other-first', async (request) => {
      await request.db.execute(sql.raw('DO $$ BEGIN END $$'))
      return 'done'
    })
    app.get('/other-second', async (request) => {
      await request.db.select({ name: projects.name }).from(projects)
      await request.db.execute(sql.raw('DO $$ BEGIN END $$'))
      await request.db.execute(sql.raw('DO $$ BEGIN END $$'))
      return 'done'
    })
    app.get('/prepared', async (request) => {
      const byName = request.db.select({ name: projects.name }).from(projects).where(eq(projects.name, sql.placeholder('name'))).prepare('by_name')
      return (await byName.execute({ name: 'a-1' })).map((row) => row.name)
    })
  }
})
const asA = bearer(app, { tenant_id: tenantA })

t.beforeEach(() => { traffic.reset() })
t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })

t.test('a one-query request takes two round trips: open + query, then check + COMMIT + session reset', async (t) => {
  const res = await app.inject({ url: '/names', headers: asA })
  t.same(res.json(), ['a-1', 'a-2'])
  const seen = traffic.read()
  t.equal(seen.checkouts, 1)
  t.equal(seen.roundTrips, 2)
  t.same(seen.commands, [
    'BEGIN', 'SELECT 1', 'SELECT 2',
    'SELECT 1', 'COMMIT',
    'SELECT 1', 'CLOSE CURSOR ALL', 'SET', 'RESET', 'UNLISTEN', 'DISCARD TEMP', 'DISCARD SEQUENCES'
  ], 'twelve statements, in this order')
})

t.test('a statement other than a plain query (a DO block) makes the closing check more, still in two round trips', async (t) => {
  t.equal((await app.inject({ url: '/other-first', headers: asA })).statusCode, 200)
  const seen = traffic.read()
  t.equal(seen.roundTrips, 2)
  t.same(seen.commands, [
    'BEGIN', 'SELECT 1', 'SELECT 1', 'DO',
    'CLOSE CURSOR ALL', 'SET CONSTRAINTS', 'SELECT 1', 'COMMIT',
    'SELECT 1', 'CLOSE CURSOR ALL', 'SET', 'RESET', 'UNLISTEN', 'DISCARD TEMP', 'DISCARD SEQUENCES'
  ], 'the role catalogs counted before the DO; cursors closed and deferred triggers fired before the check')
})

t.test('the count before the first other statement rides with it; later ones add nothing', async (t) => {
  t.equal((await app.inject({ url: '/other-second', headers: asA })).statusCode, 200)
  const seen = traffic.read()
  t.equal(seen.roundTrips, 4, 'open + select, count + DO, DO, close')
  t.same(seen.commands.slice(0, 6), ['BEGIN', 'SELECT 1', 'SELECT 2', 'SELECT 1', 'DO', 'DO'])
})

t.test('a parameterless single-statement first query rides along too', async (t) => {
  t.equal((await app.inject({ url: '/all', headers: asA })).json(), 2)
  t.equal(traffic.read().roundTrips, 2)
})

t.test('a first query holding several statements is refused (one statement per query), in the same two round trips', async (t) => {
  const res = await app.inject({ url: '/two-statements', headers: asA })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_TENANT_RLS_QUERY_FAILED')
  t.equal(traffic.read().roundTrips, 2, 'open + refused query, then ROLLBACK')
})

t.test('a route that never uses request.db takes no connection and sends nothing', async (t) => {
  const res = await app.inject({ url: '/no-database', headers: asA })
  t.same(res.json(), { tenant: tenantA })
  t.same(traffic.read(), { roundTrips: 0, statements: 0, commands: [], checkouts: 0, holdMs: 0 })
})

t.test('a failed open stops the first query before it runs, and nothing is committed', async (t) => {
  // Once plpgsql is loaded, its prefix is reserved: set_config('plpgsql.tenant', …) fails after BEGIN.
  const reserving = db.appPool({ max: 1 })
  reserving.on('connect', (client) => { client.query('DO $$ BEGIN END $$').catch(() => {}) })
  const error = await withTenant(reserving, tenantA, async (tx) => {
    await tx.execute(sql`INSERT INTO audit_log (entry) VALUES (${'first query'})`)
  }, { setting: 'plpgsql.tenant' }).then(() => undefined, (failure: { cause?: { code?: string } }) => failure.cause)
  // 42602 is set_config's own error: the INSERT was skipped, not merely refused by an aborted
  // transaction (25P02), so it can never have run outside the transaction.
  t.equal(error?.code, '42602')
  const { rows } = await db.admin.query('SELECT entry FROM audit_log')
  t.same(rows, [], 'the first query left nothing behind')
  await db.assertNoLeaks(t, reserving)
})

t.test('a named (prepared) first query rides along, parsed once per connection', async (t) => {
  for (let i = 0; i < 3; i++) {
    t.same((await app.inject({ url: '/prepared', headers: asA })).json(), ['a-1'])
  }
  const seen = traffic.read()
  t.equal(seen.roundTrips, 6, 'two per request')
})

t.test('after a failed open, a named statement is still usable on that connection', async (t) => {
  const reserving = db.appPool({ max: 1 })
  reserving.on('connect', (client) => { client.query('DO $$ BEGIN END $$').catch(() => {}) })
  const names = (tx: Parameters<Parameters<typeof withTenant>[2]>[0]) => tx.select({ name: projects.name }).from(projects).prepare('names').execute()
  const failed = await withTenant(reserving, tenantA, names, { setting: 'plpgsql.tenant' }).then(() => 'ran', () => 'failed')
  t.equal(failed, 'failed')
  // Same connection (pool of one): the opening's ParseComplete must not have marked 'names' prepared.
  const rows = await withTenant(reserving, tenantA, names)
  t.same(rows.map((row) => row.name).sort(), ['a-1', 'a-2'])
  t.equal(reserving.totalCount, 1, 'the connection was reused, not replaced')
  // A name reused for another text is refused by pg before anything is sent: no hang, no leak.
  const clash = await withTenant(reserving, tenantA, (tx) => tx.select({ id: projects.id }).from(projects).prepare('names').execute())
    .then(() => 'ran', () => 'refused')
  t.equal(clash, 'refused')
  await db.assertNoLeaks(t, reserving)
})

t.test('a first query whose values pg cannot serialize fails alone; the connection stays usable', async (t) => {
  const single = db.appPool({ max: 1 })
  const circular: Record<string, unknown> = {}
  circular.self = circular
  const failed = await withTenant(single, tenantA, (tx) => tx.execute(sql`SELECT ${circular}::jsonb AS value`))
    .then(() => undefined, (error: unknown) => error as Error)
  t.match(String(failed?.cause ?? failed), /circular/i, 'the serialization error reaches the caller')
  const rows = await withTenant(single, tenantA, (tx) => tx.select({ name: projects.name }).from(projects))
  t.same(rows.map((row) => row.name).sort(), ['a-1', 'a-2'], 'the same connection serves the next transaction')
  await db.assertNoLeaks(t, single)
})

t.test('no statement text the plugin sends carries the tenant id: it travels only as a bound parameter', async (t) => {
  const watched = db.appPool({ max: 1 })
  const texts: string[] = []
  watched.on('connect', (client) => {
    // Every statement text leaves pg through one of these two messages (simple Query, extended Parse).
    const connection = (client as unknown as { connection: { query (text: string): void, parse (message: { text: string }): void } }).connection
    const query = connection.query.bind(connection)
    const parse = connection.parse.bind(connection)
    connection.query = (text) => { texts.push(text); query(text) }
    connection.parse = (message) => { texts.push(message.text); parse(message) }
  })
  const committedApp = await buildApp(t, {
    pool: watched,
    routes (app) {
      app.get('/names', async (request) => (await request.db.select({ name: projects.name }).from(projects)).length)
      app.get('/fails', async (request) => {
        await request.db.select({ name: projects.name }).from(projects)
        throw new Error('rolled back')
      })
    }
  })
  t.equal((await committedApp.inject({ url: '/names', headers: bearer(committedApp, { tenant_id: tenantA }) })).statusCode, 200)
  t.equal((await committedApp.inject({ url: '/fails', headers: bearer(committedApp, { tenant_id: tenantA }) })).statusCode, 500)
  t.ok(texts.some((text) => text.includes('COMMIT')) && texts.some((text) => text.includes('ROLLBACK')), 'both closings were seen')
  t.same(texts.filter((text) => text.includes(tenantA)), [], 'the tenant id is in no statement text')
  await db.assertNoLeaks(t, watched)
})

t.test('extra settings, read-only, isolation level and timeouts ride in the same opening: still two round trips', async (t) => {
  const watched = db.appPool({ max: 1 })
  const wire = watchWireTraffic(watched)
  const parses = recordParses(watched)
  const userId = 'user-7f3a9c'
  const contextApp = await buildApp(t, {
    pool: watched,
    options: { settings: () => ({ 'app.user_id': userId, 'app.role_name': 'editor' }), statementTimeout: 10000, idleInTransactionSessionTimeout: 20000 },
    routes (app) {
      app.get('/names', { config: { tenant: { readOnly: true, isolationLevel: 'serializable' } } }, async (request) => {
        const rows = await request.db.select({ name: projects.name, user: sql<string>`current_setting('app.user_id')` }).from(projects).orderBy(projects.name)
        return rows
      })
    }
  })
  wire.reset() // app.ready() checked the role on this pool
  const res = await contextApp.inject({ url: '/names', headers: bearer(contextApp, { tenant_id: tenantA }) })
  t.same(res.json(), [{ name: 'a-1', user: userId }, { name: 'a-2', user: userId }])
  const seen = wire.read()
  t.equal(seen.roundTrips, 2)
  t.same(seen.commands.slice(0, 3), ['BEGIN', 'SELECT 1', 'SELECT 2'], 'BEGIN, one opening statement, the query')
  const texts = parses.map((parse) => parse.text)
  t.same(texts.filter((text) => text.includes(userId) || text.includes('editor')), [], 'setting values travel only as bound parameters')
  t.ok(texts.includes('BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY'), 'the modes are part of BEGIN')
  await db.assertNoLeaks(t, watched)
})

/** An app on a fresh one-connection pool whose Parse messages are recorded (every statement text pg parses). */
async function parsesOf (t: Test, options: Record<string, unknown>, routes?: (app: FastifyInstance) => void): Promise<{ parses: RecordedParse[], run: () => Promise<number> }> {
  const watched = db.appPool({ max: 1 })
  const parses = recordParses(watched)
  const counted = await buildApp(t, {
    pool: watched,
    options,
    routes: routes ?? ((app) => {
      app.get('/names', async (request) => (await request.db.select({ name: projects.name }).from(projects)).length)
    })
  })
  t.teardown(() => db.assertNoLeaks(t, watched))
  // What the startup check parsed is not a request's.
  parses.length = 0
  return {
    parses,
    run: async () => {
      const res = await counted.inject({ url: '/names', headers: bearer(counted, { tenant_id: tenantA }) })
      return res.statusCode === 200 && routes !== undefined ? res.json() : res.statusCode
    }
  }
}

t.test('the plugin\'s own statements are parsed once per connection, then only bound', async (t) => {
  const { parses, run } = await parsesOf(t, {})
  t.equal(await run(), 200)
  const first = parses.splice(0)
  t.equal(first.filter((parse) => /^fastify_tenant_rls_\d+$/.test(parse.name)).length, 11, 'BEGIN, the opening, the check, COMMIT, the session read and six resets, each named')
  t.same(first.filter((parse) => parse.name.startsWith('fastify_tenant_rls_q')).map((parse) => parse.name), ['fastify_tenant_rls_q1'], 'the route query is named too')
  t.equal(await run(), 200)
  t.equal(await run(), 200)
  t.same(parses, [], 'later requests parse nothing: every statement, the route query included, is only bound')
  const { rows } = await db.admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND state = 'idle'", [db.appRole])
  t.ok((rows[0] as { n: number }).n >= 1, 'the connection stayed in the pool')
})

t.test('preparedStatements: false sends every statement of the plugin unnamed (PgBouncer before 1.21)', async (t) => {
  const { parses, run } = await parsesOf(t, { preparedStatements: false })
  t.equal(await run(), 200)
  t.equal(await run(), 200)
  t.equal(parses.filter((parse) => parse.name !== '').length, 0)
  t.equal(parses.length, 2 * 12, 'twelve statements parsed on every request')
})

t.test('preparedRouteQueries: 0 sends route queries unnamed, the plugin\'s own statements stay named', async (t) => {
  const { parses, run } = await parsesOf(t, { preparedRouteQueries: 0 })
  t.equal(await run(), 200)
  parses.splice(0)
  t.equal(await run(), 200)
  t.same(parses.map((parse) => parse.name), [''], 'only the route query is parsed again')
})

t.test('a route\'s own .prepare(name) keeps its name: nothing is named over it', async (t) => {
  const { parses, run } = await parsesOf(t, {}, (app) => {
    app.get('/names', async (request) => (await request.db.select({ name: projects.name }).from(projects).prepare('my_names').execute()).length)
  })
  t.equal(await run(), 2)
  t.equal(await run(), 2)
  t.same(parses.filter((parse) => !/^fastify_tenant_rls_\d+$/.test(parse.name)).map((parse) => parse.name), ['my_names'], 'parsed once, under the route\'s name')
})

t.test('each connection keeps at most preparedRouteQueries texts: the least recently used is closed before a new one is parsed', async (t) => {
  const watched = db.appPool({ max: 1 })
  const closed: string[] = []
  watched.on('connect', (client) => {
    const connection = (client as unknown as { connection: { close (message: { type: string, name: string }): void } }).connection
    const close = connection.close.bind(connection)
    connection.close = (message) => { closed.push(message.name); close(message) }
  })
  const app = await buildApp(t, {
    pool: watched,
    options: { preparedRouteQueries: 2 },
    routes (app) {
      app.get('/text/:n', async (request) => {
        const n = Number((request.params as { n: string }).n)
        // Distinct texts: the alias differs.
        const { rows: [row] } = await request.db.execute<Record<string, number>>(sql.raw(`SELECT count(*)::int AS n${n} FROM projects`))
        const { rows: [prepared] } = await request.db.execute<{ held: number }>(sql`SELECT count(*)::int AS held FROM pg_prepared_statements WHERE name LIKE 'fastify\_tenant\_rls\_q%'`)
        return { count: row?.[`n${n}`], held: prepared?.held }
      })
    }
  })
  const asTenant = bearer(app, { tenant_id: tenantA })
  const held: number[] = []
  for (const n of [1, 2, 1, 3, 2, 4]) {
    const res = await app.inject({ url: `/text/${n}`, headers: asTenant })
    t.equal(res.json().count, 2, `text ${n} answers`)
    held.push(res.json().held)
  }
  // Two texts per request: the one under test and the pg_prepared_statements read, so a capacity
  // of 2 evicts on almost every new text; the server never holds more than 2.
  t.ok(held.every((count) => count <= 2), `never more than two held on the server (${held.join(', ')})`)
  t.ok(closed.length > 0, 'evicted statements were closed')
  t.ok(closed.every((name) => name.startsWith('fastify_tenant_rls_q')), 'only route query names are ever closed')
  t.equal(watched.totalCount, 1, 'one connection throughout')
  await db.assertNoLeaks(t, watched)
})

t.test('a prepared route query is reused across requests on its connection', async (t) => {
  const { parses, run } = await parsesOf(t, {}, (app) => {
    app.get('/names', async (request) => {
      await request.db.select({ name: projects.name }).from(projects).where(eq(projects.name, 'a-1'))
      const { rows: [row] } = await request.db.execute<{ runs: number }>(sql`SELECT (generic_plans + custom_plans)::int AS runs FROM pg_prepared_statements WHERE statement LIKE '%"name" = $1%'`)
      return row?.runs ?? 0
    })
  })
  const runs: number[] = []
  for (let i = 0; i < 7; i++) runs.push(await run())
  t.same(runs.slice(1), [2, 3, 4, 5, 6, 7], 'the same statement ran once more on each request')
  t.equal(parses.filter((parse) => parse.name.startsWith('fastify_tenant_rls_q')).length, 2, 'each route text parsed once')
})

t.test('after a statement other than a plain query the closing is sent unnamed: a route\'s DEALLOCATE ALL cannot break it', async (t) => {
  const watched = db.appPool({ max: 1 })
  const reasons: unknown[] = []
  const app = await buildApp(t, {
    pool: watched,
    routes (app) {
      app.get('/plain', async (request) => (await request.db.select({ name: projects.name }).from(projects)).length)
      app.get('/deallocate', async (request) => {
        request.log.warn = ((object: { reason?: unknown }) => { reasons.push(object.reason) }) as typeof request.log.warn
        await request.db.execute(sql.raw('DEALLOCATE ALL'))
        return 'gone'
      })
    }
  })
  const asTenant = bearer(app, { tenant_id: tenantA })
  t.equal((await app.inject({ url: '/plain', headers: asTenant })).statusCode, 200, 'the named statements exist now')
  t.equal((await app.inject({ url: '/deallocate', headers: asTenant })).statusCode, 200, 'the request itself commits')
  t.same(reasons, ['a deallocated protocol-level prepared statement (DEALLOCATE)'], 'and its connection is discarded')
  t.equal((await app.inject({ url: '/plain', headers: asTenant })).statusCode, 200, 'the next request, on a new connection, prepares them again')
  await db.assertNoLeaks(t, watched)
})

t.test('an opening with more extra settings than the cached texts is sent unnamed: no client grows the named statements', async (t) => {
  const many = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`app.extra_${i}`, 'x']))
  const { parses, run } = await parsesOf(t, { settings: () => many })
  t.equal(await run(), 200)
  parses.splice(0)
  t.equal(await run(), 200)
  t.same(parses.map((parse) => parse.name), ['', ''], 'BEGIN and the opening go unnamed; the route query and the closing stay bound by name')
  t.match(parses[1]?.text, /set_config\(\$37, \$38, true\)/)
})
