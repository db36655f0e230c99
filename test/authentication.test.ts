// Behaviours 1, 2 and 9 of the core: the plugin verifies the JWT itself (401) and resolves exactly
// one canonical tenant from it (403, never a fallback), all before any connection is taken; routes
// can opt out; the request log carries the tenant id.
import { generateKeyPairSync } from 'node:crypto'
import { Writable } from 'node:stream'
import fastifyJwt from '@fastify/jwt'
import type { FastifyJWTOptions } from '@fastify/jwt'
import { createSigner } from 'fast-jwt'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import type { FastifyTenantRlsSettings } from 'fastify-tenant-rls'
import { createTestDatabase } from './helpers/database.js'
import { JWT_SECRET, bearer, buildApp, createProjectsTable, projects, schema } from './helpers/fixture.js'

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

/** A JSON log stream and the lines written to it. */
function logCapture (): { stream: Writable, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)))
      done()
    }
  })
  return { stream, lines }
}

/** An app with the given @fastify/jwt registrations (none, one, namespaced), then the plugin and a /whoami route. */
async function appWith (t: Test, jwt: FastifyJWTOptions[], options: Partial<FastifyTenantRlsSettings>, stream?: Writable): Promise<FastifyInstance> {
  const app = Fastify(stream === undefined ? {} : { logger: { level: 'info', stream } })
  t.teardown(() => app.close())
  for (const jwtOptions of jwt) await app.register(fastifyJwt, jwtOptions)
  await app.register(fastifyTenantRls, { pool, schema, ...options })
  app.get('/whoami', async (request) => ({ tenantId: request.tenantId }))
  await app.ready()
  return app
}

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
    rejects: async () => { throw new Error('directory service down') },
    notFound: async () => { throw Object.assign(new Error('Unknown organization'), { statusCode: 404 }) },
    unauthorized: () => { throw Object.assign(new Error('Membership revoked'), { statusCode: 401 }) },
    serverError: () => { throw Object.assign(new Error('directory service down'), { statusCode: 503 }) },
    success: () => { throw Object.assign(new Error('directory service down'), { statusCode: 200 }) },
    plainObject: () => { throw Object.assign({ message: 'directory service down' }, { statusCode: 404 }) }
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
  // An HTTP client error is meant for the client: status and message kept, as Fastify would send them.
  const notFound = await call('notFound')
  t.same([notFound.statusCode, notFound.json().message], [404, 'Unknown organization'])
  const unauthorized = await call('unauthorized')
  t.same([unauthorized.statusCode, unauthorized.json().message], [401, 'Membership revoked'])
  // Anything else fails closed: a 5xx, a status that is not an error, a thrown non-Error.
  for (const mode of ['serverError', 'success', 'plainObject']) {
    const refused = await call(mode)
    t.same([refused.statusCode, refused.json().code], [403, 'FST_TENANT_RLS_TENANT_RESOLUTION_FAILED'], `${mode}: 403`)
    t.notMatch(refused.body, /directory service/, `${mode}: the error stays in the log`)
  }
})

t.test('each cause of a refused token has one fixed message; the verifier\'s text goes to the log', async (t) => {
  const { stream, lines } = logCapture()
  const app = await appWith(t, [{ secret: JWT_SECRET }], {}, stream)
  const cases: Array<[string, Record<string, string>, string]> = [
    ['no Authorization header', {}, 'no credentials were sent'],
    ['not a Bearer header', { authorization: `Token ${sign({ tenant_id: tenantA })}` }, 'no credentials were sent'],
    ['Bearer with two parts', { authorization: `Bearer ${sign({ tenant_id: tenantA })} extra` }, 'the token is malformed'],
    ['garbage token', { authorization: 'Bearer not.a.token' }, 'the token is malformed'],
    ['a payload that is not JSON', { authorization: `Bearer ${Buffer.from('{"alg":"HS256"}').toString('base64url')}.bm90LWpzb24.c2ln` }, 'the token is malformed'],
    ['signed with another key', { authorization: `Bearer ${sign({ tenant_id: tenantA }, 'another-secret-of-sufficient-length-here')}` }, 'the token signature or claims are invalid'],
    ['unsigned (alg none)', { authorization: `Bearer ${createSigner({ algorithm: 'none' })({ tenant_id: tenantA })}` }, 'the token signature or claims are invalid'],
    ['expired', { authorization: `Bearer ${sign({ tenant_id: tenantA, exp: nowSeconds - 60 })}` }, 'the token has expired'],
    ['not valid yet', { authorization: `Bearer ${sign({ tenant_id: tenantA, nbf: nowSeconds + 3600 })}` }, 'the token is not valid yet']
  ]
  for (const [name, headers, reason] of cases) {
    lines.length = 0
    const res = await app.inject({ url: '/whoami', headers })
    t.same([res.statusCode, res.json().code, res.json().message], [401, 'FST_TENANT_RLS_UNAUTHENTICATED', `Authentication failed: ${reason}`], name)
    const logged = lines.find((line) => line.msg === 'fastify-tenant-rls: authentication failed')
    t.equal(logged?.level, 30, `${name}: logged at info, a client's doing`)
    t.type((logged?.err as { message?: unknown } | undefined)?.message, 'string', `${name}: the verifier's own error is in the log`)
  }
})

t.test('an HS256 token sent to an RS256 setup: a fixed 401, the internal error logged at warn', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
  const { stream, lines } = logCapture()
  const app = await appWith(t, [{ secret: { private: privateKey, public: publicKey }, sign: { algorithm: 'RS256' } }], {}, stream)
  t.equal((await app.inject({ url: '/whoami', headers: bearer(app, { tenant_id: tenantA }) })).statusCode, 200, 'an RS256 token passes')
  const res = await app.inject({ url: '/whoami', headers: { authorization: `Bearer ${sign({ tenant_id: tenantA })}` } })
  t.equal(res.statusCode, 401)
  t.match(res.json().message, /^Authentication failed: (the token signature or claims are invalid|the credentials were not accepted)$/)
  t.notMatch(res.body, /Cannot read|undefined|length|key/i, 'no internal error text in the body')
  const logged = lines.find((line) => line.msg === 'fastify-tenant-rls: authentication failed')
  t.ok(logged?.err, 'the cause is in the log')
})

t.test('verify authenticates without @fastify/jwt (API keys here); nothing or a throw is a 401', async (t) => {
  const keys = new Map([['key-of-a', { tenant_id: tenantA, sub: 'service-a' }]])
  const { stream, lines } = logCapture()
  const seenClaims: unknown[] = []
  const app = await appWith(t, [], {
    async verify (request) {
      const key = request.headers['x-api-key']
      if (key === undefined) return null
      const claims = keys.get(String(key))
      if (claims === undefined) throw new Error(`unknown API key ${String(key)} (lookup in api_keys)`)
      return claims
    }
  }, stream)
  t.same((await app.inject({ url: '/whoami', headers: { 'x-api-key': 'key-of-a' } })).json(), { tenantId: tenantA })
  const missing = await app.inject({ url: '/whoami' })
  t.same([missing.statusCode, missing.json().message], [401, 'Authentication failed: no credentials were sent'])
  lines.length = 0
  const unknown = await app.inject({ url: '/whoami', headers: { 'x-api-key': 'key-of-nobody' } })
  t.same([unknown.statusCode, unknown.json().message], [401, 'Authentication failed: the credentials were not accepted'])
  t.notMatch(unknown.body, /key-of-nobody|api_keys/, 'the verifier message stays in the log')
  const logged = lines.find((line) => line.msg === 'fastify-tenant-rls: authentication failed')
  t.equal(logged?.level, 40, 'an unexpected verifier failure is logged at warn')
  t.match((logged?.err as { message?: unknown } | undefined)?.message, /key-of-nobody/)

  const resolving = await appWith(t, [], {
    verify: async (request) => keys.get(String(request.headers['x-api-key'])),
    resolveTenant: (_request, claims) => { seenClaims.push(claims); return (claims as { tenant_id: string }).tenant_id }
  })
  t.same((await resolving.inject({ url: '/whoami', headers: { 'x-api-key': 'key-of-a' } })).json(), { tenantId: tenantA })
  t.same(seenClaims, [{ tenant_id: tenantA, sub: 'service-a' }], 'resolveTenant gets what verify resolved to')
})

t.test('@fastify/jwt namespace, decoratorName and formatUser', async (t) => {
  const namespaced = await appWith(t, [{ secret: JWT_SECRET, namespace: 'api' }, { secret: 'admin-secret-that-is-long-enough-for-hs256', namespace: 'admin' }], { jwtNamespace: 'api' })
  const apiJwt = (namespaced as unknown as { jwt: Record<string, { sign: (claims: object) => string }> }).jwt
  const tokenOf = (namespace: string): string => apiJwt[namespace]?.sign({ tenant_id: tenantA }) ?? ''
  t.same((await namespaced.inject({ url: '/whoami', headers: { authorization: `Bearer ${tokenOf('api')}` } })).json(), { tenantId: tenantA }, "the namespace's token is verified")
  const admin = await namespaced.inject({ url: '/whoami', headers: { authorization: `Bearer ${tokenOf('admin')}` } })
  t.same([admin.statusCode, admin.json().message], [401, 'Authentication failed: the token signature or claims are invalid'], "another namespace's token is not")

  const formatted = await appWith(t, [{ secret: JWT_SECRET, decoratorName: 'identity', formatUser: (payload) => ({ org: { id: (payload as { tenant_id: string }).tenant_id } }) }], { claim: 'org.id' })
  t.same((await formatted.inject({ url: '/whoami', headers: { authorization: `Bearer ${sign({ tenant_id: tenantA })}` } })).json(), { tenantId: tenantA }, 'claim reads the user formatUser returned')
})

t.test('a verifier that cannot work fails register, with what to change', async (t) => {
  const refusals: Array<[string, FastifyJWTOptions[], Partial<FastifyTenantRlsSettings>, RegExp]> = [
    ['no @fastify/jwt and no verify', [], {}, /request\.jwtVerify does not exist: register @fastify\/jwt before fastify-tenant-rls, or pass verify/],
    ['@fastify/jwt under a namespace, jwtNamespace not set', [{ secret: JWT_SECRET, namespace: 'api' }], {}, /namespace\(s\) api, so request\.jwtVerify does not exist: set jwtNamespace: 'api'/],
    ['jwtNamespace that was never registered', [{ secret: JWT_SECRET, namespace: 'api' }], { jwtNamespace: 'admin' }, /jwtNamespace 'admin' has no request\.adminJwtVerify.*namespaces registered: api/],
    ['jwtNamespace without any namespace', [{ secret: JWT_SECRET }], { jwtNamespace: 'api' }, /jwtNamespace 'api' has no request\.apiJwtVerify/],
    ['verify and jwtNamespace both', [{ secret: JWT_SECRET, namespace: 'api' }], { jwtNamespace: 'api', verify: async () => ({}) }, /either verify or jwtNamespace/],
    ['verify not a function', [], { verify: 'session' as never }, /verify must be a function/],
    ['jwtNamespace not an identifier', [], { jwtNamespace: 'api key' }, /jwtNamespace must be the namespace given to @fastify\/jwt/]
  ]
  for (const [name, jwt, options, message] of refusals) {
    await t.rejects(appWith(t, jwt, options), { code: 'FST_TENANT_RLS_INVALID_OPTION', message }, name)
  }
  const late = Fastify()
  t.teardown(() => late.close())
  await t.rejects(async () => {
    await late.register(fastifyTenantRls, { pool, schema })
    await late.register(fastifyJwt, { secret: JWT_SECRET })
  }, { code: 'FST_TENANT_RLS_INVALID_OPTION' }, '@fastify/jwt registered after the plugin')
})

t.test('the request log carries the tenant id', async (t) => {
  const { stream, lines } = logCapture()
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

t.test('a verify that answers yes or no instead of claims is refused: only claims are an identity', async (t) => {
  for (const answer of [true, false, 0, 'yes']) {
    const app = await appWith(t, [], {
      verify: async () => answer,
      // Reads the tenant from where the client points: only safe behind a real identity.
      resolveTenant: (request) => String(request.headers['x-tenant'])
    })
    const reply = await app.inject({ url: '/whoami', headers: { 'x-tenant': tenantA } })
    t.same([reply.statusCode, reply.json().code, reply.json().message], [401, 'FST_TENANT_RLS_UNAUTHENTICATED', 'Authentication failed: the credentials were not accepted'], `verify answered ${JSON.stringify(answer)}`)
  }
})
