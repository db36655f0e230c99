// Issue 9, section 4: what a tenant transaction carries beyond its tenant. Extra transaction-local
// settings (per-user policies inside a tenant, the JWT claims in SQL) and transaction modes
// (read-only, isolation level, timeouts), plugin-wide, per route and per withTenant call; all set
// by the opening, so the round trips stay those of test/round-trips.test.ts.
import fastifyJwt from '@fastify/jwt'
import { sql } from 'drizzle-orm'
import Fastify from 'fastify'
import type { FastifyRequest } from 'fastify'
import t from 'tap'
import fastifyTenantRls, { withTenant } from 'fastify-tenant-rls'
import { createTestDatabase } from './helpers/database.js'
import { JWT_SECRET, bearer, buildApp, committedNames, createProjectsTable, projects } from './helpers/fixture.js'

const db = await createTestDatabase(t)
const { tenantA, tenantB } = await createProjectsTable(db)
// Per-user rows inside a tenant: the tenant policy and a user policy, both restrictive in effect.
await db.asOwner(`
  CREATE TABLE notes (tenant_id uuid NOT NULL, owner text NOT NULL, body text NOT NULL);
  ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
  ALTER TABLE notes FORCE ROW LEVEL SECURITY;
  CREATE POLICY own_notes ON notes
    USING (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)
           AND owner = (SELECT nullif(current_setting('app.user_id', true), '')))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)
           AND owner = (SELECT nullif(current_setting('app.user_id', true), '')));
  GRANT SELECT, INSERT ON notes TO ${db.appRole};
`)
await db.admin.query("INSERT INTO notes VALUES ($1, 'ann', 'ann-1'), ($1, 'bob', 'bob-1'), ($2, 'ann', 'other-tenant-ann')", [tenantA, tenantB])

const pool = db.appPool()
t.afterEach(async (t) => {
  await db.assertNoLeaks(t, pool)
  await db.admin.query("DELETE FROM projects WHERE name NOT IN ('a-1', 'a-2', 'b-1')")
})

const subOf = (request: FastifyRequest): string => String((request.user as { sub?: unknown }).sub)
const MODE_SQL = sql`SELECT current_setting('transaction_isolation') AS isolation, current_setting('transaction_read_only') AS "readOnly",
  current_setting('statement_timeout') AS "statementTimeout", current_setting('lock_timeout') AS "lockTimeout",
  current_setting('idle_in_transaction_session_timeout') AS "idleTimeout", current_setting('plan_cache_mode') AS "planCache"`

async function modeOf (request: FastifyRequest): Promise<unknown> {
  const rows = await request.db.execute(MODE_SQL)
  return rows.rows[0]
}

t.test('settings runs with the tenant already set: request.tenantId is the verified tenant there', async (t) => {
  const seen: unknown[] = []
  const app = await buildApp(t, {
    pool,
    options: { settings: (request) => { seen.push(request.tenantId); return { 'app.tenant_seen': String(request.tenantId) } } },
    routes (app) {
      app.get('/seen', async (request) => (await request.db.execute<{ seen: string }>(sql`SELECT current_setting('app.tenant_seen') AS seen`)).rows[0])
    }
  })
  const reply = await app.inject({ url: '/seen', headers: bearer(app, { tenant_id: tenantA, sub: 'ann' }) })
  t.same(reply.json(), { seen: tenantA })
  t.same(seen, [tenantA])
})

t.test('settings: extra transaction-local settings make per-user policies inside a tenant', async (t) => {
  const app = await buildApp(t, {
    pool,
    options: {
      settings: (request) => ({ 'app.user_id': subOf(request), 'request.jwt.claims': JSON.stringify(request.user) })
    },
    routes (app) {
      app.get('/notes', async (request) => {
        const rows = await request.db.execute<{ body: string }>(sql`SELECT body FROM notes ORDER BY body`)
        return rows.rows.map((row) => row.body)
      })
      app.get('/claims', async (request) => {
        const rows = await request.db.execute<{ sub: string, tenant: string }>(
          sql`SELECT current_setting('request.jwt.claims', true)::jsonb ->> 'sub' AS sub, current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id' AS tenant`)
        return rows.rows[0]
      })
      app.post('/notes', async (request) => {
        const { owner } = request.body as { owner: string }
        await request.db.execute(sql`INSERT INTO notes VALUES (${request.tenantId}, ${owner}, 'new')`)
        return { ok: true }
      })
    }
  })
  t.same((await app.inject({ url: '/notes', headers: bearer(app, { tenant_id: tenantA, sub: 'ann' }) })).json(), ['ann-1'])
  t.same((await app.inject({ url: '/notes', headers: bearer(app, { tenant_id: tenantA, sub: 'bob' }) })).json(), ['bob-1'])
  t.same((await app.inject({ url: '/notes', headers: bearer(app, { tenant_id: tenantB, sub: 'ann' }) })).json(), ['other-tenant-ann'])
  t.same((await app.inject({ url: '/claims', headers: bearer(app, { tenant_id: tenantA, sub: 'ann' }) })).json(), { sub: 'ann', tenant: tenantA })

  // A user cannot write a row as another user of the same tenant: WITH CHECK reads the setting.
  const forged = await app.inject({ method: 'POST', url: '/notes', headers: bearer(app, { tenant_id: tenantA, sub: 'ann' }), payload: { owner: 'bob' } })
  t.ok(forged.statusCode >= 400, 'refused')
  const { rows } = await db.admin.query("SELECT owner FROM notes WHERE body = 'new'")
  t.same(rows, [], 'nothing was written as bob')
})

t.test('settings that fail or are not acceptable refuse the request before any connection', async (t) => {
  let acquired = 0
  const onAcquire = (): void => { acquired++ }
  pool.on('acquire', onAcquire)
  t.teardown(() => { pool.off('acquire', onAcquire) })
  const cases: Array<[string, (request: FastifyRequest) => unknown, number, string, RegExp?]> = [
    ['a throwing function', () => { throw new Error('no user') }, 403, 'FST_TENANT_RLS_SETTINGS_FAILED'],
    ['a rejecting function', async () => { throw new Error('no user') }, 403, 'FST_TENANT_RLS_SETTINGS_FAILED'],
    ['the tenant setting itself', (request) => ({ 'app.current_tenant_id': String(request.tenantId) }), 500, 'FST_TENANT_RLS_INVALID_SETTINGS', /tenant setting/],
    ['a PostgreSQL setting (no dot)', () => ({ statement_timeout: '0' }), 500, 'FST_TENANT_RLS_INVALID_SETTINGS', /lower-case identifiers joined by dots/],
    ['a quoted name', () => ({ "app.x'": '1' }), 500, 'FST_TENANT_RLS_INVALID_SETTINGS', /lower-case identifiers/],
    ['a number value', () => ({ 'app.user_id': 42 }), 500, 'FST_TENANT_RLS_INVALID_SETTINGS', /must be a string/],
    ['a NUL byte', () => ({ 'app.user_id': 'a\u0000b' }), 500, 'FST_TENANT_RLS_INVALID_SETTINGS', /NUL/],
    ['not an object', () => 'app.user_id=1', 500, 'FST_TENANT_RLS_INVALID_SETTINGS', /must be an object/]
  ]
  for (const [name, settings, status, code, message] of cases) {
    const app = await buildApp(t, {
      pool,
      options: { settings: settings as never },
      routes (app) { app.get('/names', async (request) => (await request.db.select().from(projects)).length) }
    })
    // Counted from here: app.ready() took one to check the role.
    const before = acquired
    const res = await app.inject({ url: '/names', headers: bearer(app, { tenant_id: tenantA, sub: 'ann' }) })
    t.equal(acquired, before, `${name}: no connection was taken`)
    t.equal(res.statusCode, status, `${name}: status`)
    t.equal(res.json().code, code, `${name}: code`)
    if (message !== undefined) t.match(res.json().message, message, `${name}: says what is wrong`)
  }
})

t.test('plugin-wide modes and per-route overrides reach the transaction', async (t) => {
  const app = await buildApp(t, {
    pool,
    options: { isolationLevel: 'repeatable read', statementTimeout: 30000, idleInTransactionSessionTimeout: 60000, lockTimeout: 1500, planCacheMode: 'force_generic_plan' },
    routes (app) {
      app.get('/defaults', modeOf)
      app.get('/override', { config: { tenant: { readOnly: true, isolationLevel: 'serializable', statementTimeout: 0, lockTimeout: 250, idleInTransactionSessionTimeout: 5000, planCacheMode: 'force_custom_plan' } } }, modeOf)
      app.get('/true', { config: { tenant: true } }, modeOf)
    }
  })
  const asA = bearer(app, { tenant_id: tenantA })
  const defaults = { isolation: 'repeatable read', readOnly: 'off', statementTimeout: '30s', lockTimeout: '1500ms', idleTimeout: '1min', planCache: 'force_generic_plan' }
  t.same((await app.inject({ url: '/defaults', headers: asA })).json(), defaults)
  t.same((await app.inject({ url: '/true', headers: asA })).json(), defaults, 'tenant: true keeps the defaults')
  t.same((await app.inject({ url: '/override', headers: asA })).json(),
    { isolation: 'serializable', readOnly: 'on', statementTimeout: '0', lockTimeout: '250ms', idleTimeout: '5s', planCache: 'force_custom_plan' })
})

t.test('without options the server keeps its own isolation level and timeouts', async (t) => {
  const app = await buildApp(t, { pool, routes (app) { app.get('/mode', modeOf) } })
  t.same((await app.inject({ url: '/mode', headers: bearer(app, { tenant_id: tenantA }) })).json(),
    { isolation: 'read committed', readOnly: 'off', statementTimeout: '0', lockTimeout: '5s', idleTimeout: '0', planCache: 'auto' })
})

t.test('planCacheMode: set per transaction, it decides how a prepared route query is planned', async (t) => {
  // A pool of one connection, so every request reuses the same prepared statement.
  const single = db.appPool({ max: 1 })
  const PLANS_SQL = sql`SELECT generic_plans::int AS generic, custom_plans::int AS custom FROM pg_prepared_statements WHERE statement LIKE 'select %"projects"%limit $1'`
  const newest = async (request: FastifyRequest): Promise<unknown> => {
    await request.db.select().from(projects).limit(5)
    return (await request.db.execute(PLANS_SQL)).rows[0]
  }
  const app = await buildApp(t, {
    pool: single,
    routes (app) {
      app.get('/custom', { config: { tenant: { planCacheMode: 'force_custom_plan' } } }, newest)
      app.get('/generic', { config: { tenant: { planCacheMode: 'force_generic_plan' } } }, newest)
      app.get('/mode', modeOf)
    }
  })
  const asA = bearer(app, { tenant_id: tenantA })
  const last = async (url: string, times: number): Promise<unknown> => {
    let plans: unknown
    for (let request = 0; request < times; request++) plans = (await app.inject({ url, headers: asA })).json()
    return plans
  }
  t.same(await last('/custom', 5), { generic: 0, custom: 5 }, 'force_custom_plan: planned on every execution')
  t.same(await last('/generic', 5), { generic: 5, custom: 5 }, 'force_generic_plan: the generic plan, planned once')
  t.same(await last('/custom', 1), { generic: 5, custom: 6 }, 'each transaction gets its route\'s mode')
  // Tenant B next on the same connection: nothing of A's transaction mode reaches it.
  t.equal(((await app.inject({ url: '/mode', headers: bearer(app, { tenant_id: tenantB }) })).json() as { planCache: string }).planCache, 'auto', 'transaction-local: B\'s request on the same connection runs on the server\'s mode')
  await db.assertNoLeaks(t, single)
})

t.test('a write in a read-only transaction is a 403 READ_ONLY_TRANSACTION, and nothing is written', async (t) => {
  const insert = async (request: FastifyRequest): Promise<unknown> => {
    await request.db.insert(projects).values({ tenantId: String(request.tenantId), name: `${request.method}-write` })
    return { ok: true }
  }
  const app = await buildApp(t, {
    pool,
    options: { readOnly: 'safe-methods' },
    routes (app) {
      app.get('/write', insert)
      app.post('/write', insert)
      app.get('/writable', { config: { tenant: { readOnly: false } } }, insert)
      app.post('/read-only', { config: { tenant: { readOnly: true } } }, insert)
      app.get('/set-read-write', async (request, reply) => {
        // Once a query has run (the opening's, at the latest), PostgreSQL refuses to turn the
        // transaction read-write: route code cannot undo the option.
        const failure = await request.db.execute(sql`SET TRANSACTION READ WRITE`).then(() => undefined, (error: { cause?: { code?: string } }) => error.cause?.code)
        return reply.code(409).send({ sqlState: failure })
      })
    }
  })
  const asA = bearer(app, { tenant_id: tenantA })
  t.same((await app.inject({ url: '/set-read-write', headers: asA })).json(), { sqlState: '25001' })
  for (const [method, url] of [['GET', '/write'], ['POST', '/read-only']] as const) {
    const res = await app.inject({ method, url, headers: asA })
    t.equal(res.statusCode, 403, `${method} ${url}`)
    t.same(res.json().code, 'FST_TENANT_RLS_READ_ONLY_TRANSACTION')
    t.notMatch(res.body, /insert|projects/i, 'no SQL in the body')
  }
  t.equal((await app.inject({ method: 'POST', url: '/write', headers: asA })).statusCode, 200, 'POST stays read-write')
  t.equal((await app.inject({ url: '/writable', headers: asA })).statusCode, 200, 'a route can opt back in')
  t.same((await committedNames(db, tenantA)).sort(), ['GET-write', 'POST-write', 'a-1', 'a-2'], 'only the read-write requests wrote')
})

t.test('statement_timeout cancels a slow query of the transaction', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.get('/slow', { config: { tenant: { statementTimeout: 50 } } }, async (request, reply) => {
        const failure = await request.db.execute(sql`SELECT pg_sleep(5)`).then(() => undefined, (error: { cause?: { code?: string } }) => error.cause?.code)
        return reply.code(422).send({ sqlState: failure })
      })
    }
  })
  t.same((await app.inject({ url: '/slow', headers: bearer(app, { tenant_id: tenantA }) })).json(), { sqlState: '57014' })
})

t.test('bad transaction options fail register, or the route registration', async (t) => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['readOnly as a string', { readOnly: 'yes' }, /readOnly must be true, false or 'safe-methods'/],
    ['an unknown isolation level', { isolationLevel: 'snapshot' }, /isolationLevel must be one of 'read committed', 'repeatable read', 'serializable'/],
    ['a negative statement timeout', { statementTimeout: -1 }, /statementTimeout must be a whole number of milliseconds/],
    ['a fractional idle timeout', { idleInTransactionSessionTimeout: 1.5 }, /idleInTransactionSessionTimeout must be a whole number/],
    ['an unknown plan cache mode', { planCacheMode: 'generic' }, /planCacheMode must be one of 'auto', 'force_generic_plan', 'force_custom_plan'/],
    ['settings that are not a function', { settings: { 'app.user_id': 'x' } }, /settings must be a function/]
  ]
  for (const [name, options, message] of cases) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(fastifyJwt, { secret: JWT_SECRET })
    const error = await app.register(fastifyTenantRls, { pool, ...options } as never).then(() => null, (failure: unknown) => failure) as { code?: string, message?: string } | null
    t.equal(error?.code, 'FST_TENANT_RLS_INVALID_OPTION', `${name}: rejected`)
    t.match(error?.message, message, `${name}: explains itself`)
  }

  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, { pool })
  const routes: Array<[unknown, RegExp]> = [
    [{ readOnly: 'safe-methods' }, /route GET \/bad: config\.tenant\.readOnly must be true or false/],
    [{ isolation: 'serializable' }, /config\.tenant has unknown key\(s\) isolation/],
    [{ lockTimeout: '1s' }, /config\.tenant\.lockTimeout must be a whole number/],
    ['read-only', /config\.tenant must be an object of transaction options/]
  ]
  for (const [tenant, message] of routes) {
    t.throws(() => app.get('/bad', { config: { tenant: tenant as never } }, async () => 'never'), { code: 'FST_TENANT_RLS_INVALID_OPTION', message }, JSON.stringify(tenant))
  }
})

t.test('withTenant takes the same options per call', async (t) => {
  const names = await withTenant(pool, tenantA, async (tx) => {
    const rows = await tx.execute<{ body: string }>(sql`SELECT body FROM notes`)
    return rows.rows.map((row) => row.body)
  }, { settings: { 'app.user_id': 'bob' } })
  t.same(names, ['bob-1'])

  const readOnly = await withTenant(pool, tenantA, (tx) => tx.insert(projects).values({ tenantId: tenantA, name: 'worker' }), { readOnly: true })
    .then(() => undefined, (error: { cause?: { code?: string } }) => error.cause?.code)
  t.equal(readOnly, '25006')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])

  await t.rejects(withTenant(pool, tenantA, async () => 'never', { settings: { 'app.current_tenant_id': tenantB } }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /withTenant options: app\.current_tenant_id is the tenant setting/ })
  await t.rejects(withTenant(pool, tenantA, async () => 'never', { isolationLevel: 'snapshot' as never }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /withTenant options\.isolationLevel/ })

  const app = await buildApp(t, { pool, options: { readOnly: 'safe-methods', statementTimeout: 1000 } })
  const mode = await app.withTenant(tenantA, async (tx) => (await tx.execute(MODE_SQL)).rows[0])
  t.same(mode, { isolation: 'read committed', readOnly: 'off', statementTimeout: '1s', lockTimeout: '5s', idleTimeout: '0', planCache: 'auto' }, "'safe-methods' reads as read-write without a request; the plugin's timeouts apply")
  const overridden = await app.withTenant(tenantA, async (tx) => (await tx.execute(MODE_SQL)).rows[0], { readOnly: true, isolationLevel: 'serializable', settings: { 'app.user_id': 'ann' } })
  t.same(overridden, { isolation: 'serializable', readOnly: 'on', statementTimeout: '1s', lockTimeout: '5s', idleTimeout: '0', planCache: 'auto' })
})
