// Behaviours 1, 2 and 9 of the core: the plugin verifies the JWT itself (401) and resolves exactly
// one canonical tenant from it (403, never a fallback), all before any connection is taken; routes
// can opt out; the request log carries the tenant id.
import { Writable } from 'node:stream'
import { createSigner } from 'fast-jwt'
import t from 'tap'
import { createTestDatabase } from './helpers/database.js'
import { JWT_SECRET, bearer, buildApp, createProjectsTable, projects } from './helpers/fixture.js'

const db = await createTestDatabase(t)
const { tenantA } = await createProjectsTable(db)

const pool = db.appPool()
let checkouts = 0
pool.on('acquire', () => { checkouts++ })

const app = await buildApp(t, {
  pool,
  routes (app) {
    app.get('/whoami', async (request) => {
      const rows = await request.db.select({ tenantId: projects.tenantId }).from(projects).limit(1)
      return { tenantId: request.tenantId, seen: rows[0]?.tenantId }
    })
    app.get('/health', { config: { tenant: false } }, async (request) => ({ tenantId: request.tenantId }))
    app.get('/health/db', { config: { tenant: false } }, async (request) => request.db.select().from(projects))
  }
})

const nowSeconds = Math.floor(Date.now() / 1000)
const sign = (claims: Record<string, unknown>, key: string = JWT_SECRET, algorithm: 'HS256' | 'HS512' = 'HS256'): string =>
  createSigner({ key, algorithm })(claims)

t.test('requests without a valid token get 401 and never touch the pool', async (t) => {
  // app.ready() took one connection for its role check; nothing after it may.
  const before = checkouts
  const cases: Array<[string, Record<string, string>]> = [
    ['no Authorization header', {}],
    ['not a Bearer header', { authorization: `Token ${sign({ tenant_id: tenantA })}` }],
    ['garbage token', { authorization: 'Bearer not.a.token' }],
    ['signed with another key', { authorization: `Bearer ${sign({ tenant_id: tenantA }, 'another-secret-of-sufficient-length-here')}` }],
    ['expired', { authorization: `Bearer ${sign({ tenant_id: tenantA, exp: nowSeconds - 60 })}` }],
    ['not valid yet', { authorization: `Bearer ${sign({ tenant_id: tenantA, nbf: nowSeconds + 3600 })}` }],
    ['unsigned (alg none)', { authorization: `Bearer ${createSigner({ algorithm: 'none' })({ tenant_id: tenantA })}` }]
  ]
  for (const [name, headers] of cases) {
    const res = await app.inject({ url: '/whoami', headers })
    t.equal(res.statusCode, 401, `${name}: 401`)
    t.equal(res.json().code, 'FST_TENANT_RLS_UNAUTHENTICATED', `${name}: stable code`)
  }
  t.equal(checkouts, before, 'no connection was taken for any of them')
})

t.test('a verified token without a usable tenant gets 403, with no fallback', async (t) => {
  const before = checkouts
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['claim absent', { sub: 'user-1' }, 'FST_TENANT_RLS_TENANT_MISSING'],
    ['claim null', { tenant_id: null }, 'FST_TENANT_RLS_TENANT_MISSING'],
    ['claim empty', { tenant_id: '' }, 'FST_TENANT_RLS_TENANT_MISSING'],
    ['claim a number', { tenant_id: 42 }, 'FST_TENANT_RLS_TENANT_INVALID'],
    ['claim an array', { tenant_id: [tenantA] }, 'FST_TENANT_RLS_TENANT_INVALID'],
    ['claim an object', { tenant_id: { id: tenantA } }, 'FST_TENANT_RLS_TENANT_INVALID'],
    ['claim not a UUID', { tenant_id: 'acme' }, 'FST_TENANT_RLS_TENANT_INVALID'],
    ['UUID in braces', { tenant_id: `{${tenantA}}` }, 'FST_TENANT_RLS_TENANT_INVALID'],
    ['UUID without hyphens', { tenant_id: tenantA.replaceAll('-', '') }, 'FST_TENANT_RLS_TENANT_INVALID'],
    ['UUID with spaces', { tenant_id: ` ${tenantA}` }, 'FST_TENANT_RLS_TENANT_INVALID'],
    ['nil UUID', { tenant_id: '00000000-0000-0000-0000-000000000000' }, 'FST_TENANT_RLS_TENANT_INVALID'],
    ['SQL in the claim', { tenant_id: "'; DROP TABLE projects; --" }, 'FST_TENANT_RLS_TENANT_INVALID']
  ]
  for (const [name, claims, code] of cases) {
    const res = await app.inject({ url: '/whoami', headers: bearer(app, claims) })
    t.equal(res.statusCode, 403, `${name}: 403`)
    t.equal(res.json().code, code, `${name}: ${code}`)
  }
  t.equal(checkouts, before, 'no connection was taken for any of them')
})

t.test('an upper-case UUID names the same tenant, in canonical form', async (t) => {
  const res = await app.inject({ url: '/whoami', headers: bearer(app, { tenant_id: tenantA.toUpperCase() }) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { tenantId: tenantA, seen: tenantA })
})

t.test('routes with config.tenant === false need no token and get no tenant or database', async (t) => {
  const before = checkouts
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 200)
  t.same(health.json(), { tenantId: null })
  const misuse = await app.inject({ url: '/health/db' })
  t.equal(misuse.statusCode, 500)
  t.equal(misuse.json().code, 'FST_TENANT_RLS_NO_TENANT_CONTEXT')
  t.equal(checkouts, before, 'opted-out routes take no connection')
  t.equal((await app.inject({ url: '/nowhere' })).statusCode, 404, 'an unknown route is a plain 404')
})

t.test('a nested claim path reads a nested claim, own properties only', async (t) => {
  const nested = await buildApp(t, {
    pool,
    options: { claim: 'org.id' },
    routes (app) { app.get('/whoami', async (request) => ({ tenantId: request.tenantId })) }
  })
  t.same((await nested.inject({ url: '/whoami', headers: bearer(nested, { org: { id: tenantA } }) })).json(), { tenantId: tenantA })
  t.equal((await nested.inject({ url: '/whoami', headers: bearer(nested, { tenant_id: tenantA }) })).statusCode, 403)
  const inherited = await buildApp(t, {
    pool,
    options: { claim: 'org.constructor' },
    routes (app) { app.get('/whoami', async (request) => ({ tenantId: request.tenantId })) }
  })
  const res = await inherited.inject({ url: '/whoami', headers: bearer(inherited, { org: {} }) })
  t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_MISSING', 'an inherited property is not a claim')
})

t.test('resolveTenant replaces the claim; nothing, junk or a throw is a 403', async (t) => {
  const outcomes: Record<string, () => unknown> = {
    ok: () => tenantA,
    async: async () => tenantA,
    none: () => null,
    undefined: () => undefined,
    junk: () => 'tenant-a',
    throws: () => { throw new Error('directory service down') },
    rejects: async () => { throw new Error('directory service down') }
  }
  const resolving = await buildApp(t, {
    pool,
    options: {
      resolveTenant: async (request) => {
        const { mode } = request.user as { mode: string }
        return outcomes[mode]?.() as string | null
      }
    },
    routes (app) { app.get('/whoami', async (request) => ({ tenantId: request.tenantId })) }
  })
  const call = async (mode: string) => resolving.inject({ url: '/whoami', headers: bearer(resolving, { mode, tenant_id: tenantA }) })
  t.same((await call('ok')).json(), { tenantId: tenantA })
  t.same((await call('async')).json(), { tenantId: tenantA })
  t.equal((await call('none')).json().code, 'FST_TENANT_RLS_TENANT_MISSING')
  t.equal((await call('undefined')).json().code, 'FST_TENANT_RLS_TENANT_MISSING', 'the tenant_id claim is not used as a fallback')
  t.equal((await call('junk')).json().code, 'FST_TENANT_RLS_TENANT_INVALID')
  const thrown = await call('throws')
  t.equal(thrown.statusCode, 403)
  t.equal(thrown.json().code, 'FST_TENANT_RLS_TENANT_RESOLUTION_FAILED')
  t.notMatch(thrown.body, /directory service/, 'the resolver error stays in the log')
  t.equal((await call('rejects')).json().code, 'FST_TENANT_RLS_TENANT_RESOLUTION_FAILED')
})

t.test('the request log carries the tenant id', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)))
      done()
    }
  })
  const logged = await buildApp(t, {
    pool,
    fastify: { logger: { level: 'info', stream } },
    routes (app) {
      app.get('/log', async (request) => {
        request.log.info('inside the handler')
        return { ok: true }
      })
    }
  })
  await logged.inject({ url: '/log', headers: bearer(logged, { tenant_id: tenantA }) })
  const handlerLine = lines.find((line) => line.msg === 'inside the handler')
  t.equal(handlerLine?.tenantId, tenantA, 'handler logs carry it')
  const completed = lines.find((line) => line.msg === 'request completed')
  t.equal(completed?.tenantId, tenantA, "Fastify's own response log carries it")
})

t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })
