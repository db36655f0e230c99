// Hooks that run after the plugin's. An onSend hook that fails after the transaction has been
// committed turns the reply into an error while the write is kept: a client that retries writes
// twice. The commit must be the last thing before the response is written, whatever the order in
// which the application, its child contexts, its routes and other plugins add their hooks. Each
// case asserts what was really committed, read back through the admin pool.
import { Writable } from 'node:stream'
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest, onSendHookHandler, RouteOptions } from 'fastify'
import t from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import { eventually } from '../helpers/database.js'
import { gate } from '../helpers/gate.js'
import { bearer, buildApp, committedNames, JWT_SECRET, projects, schema, projectsWorld } from '../helpers/fixture.js'

const { db, pool, tenantA } = await projectsWorld(t, 1)

const SEEDED = ['a-1', 'a-2']

async function insert (request: FastifyRequest, name: string): Promise<{ ok: true }> {
  await request.db.insert(projects).values({ name, tenantId: String(request.tenantId) })
  return { ok: true }
}

async function failingAsyncOnSend (): Promise<never> {
  throw new Error('onSend failed')
}

function failingCallbackOnSend (_request: FastifyRequest, _reply: FastifyReply, _payload: unknown, done: (error: Error) => void): void {
  // Fails on a later turn, as a hook that waits for I/O would.
  setImmediate(() => done(new Error('onSend failed')))
}

async function post (app: FastifyInstance, url: string): Promise<{ statusCode: number, json: () => { code?: string } }> {
  return app.inject({ method: 'POST', url, headers: bearer(app, { tenant_id: tenantA }) })
}

t.test('an onSend hook added after the plugin that fails: an error reply and nothing committed', async (t) => {
  for (const [style, hook] of [['async', failingAsyncOnSend], ['callback', failingCallbackOnSend]] as const) {
    const app = await buildApp(t, {
      pool,
      routes (app) {
        app.addHook('onSend', hook as onSendHookHandler)
        app.post('/write', (request) => insert(request, `after-plugin-${style}`))
      }
    })
    t.equal((await post(app, '/write')).statusCode, 500, style)
    t.same(await committedNames(db, tenantA), SEEDED, `${style}: the write was not committed`)
  }
})

t.test('the same hook in a child context registered after the plugin', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.register(async function child (scope) {
        scope.addHook('onSend', failingAsyncOnSend)
        scope.post('/child/write', (request) => insert(request, 'child'))
      })
    }
  })
  t.equal((await post(app, '/child/write')).statusCode, 500)
  t.same(await committedNames(db, tenantA), SEEDED)
})

t.test('a route-level onSend hook that fails', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/route-hook', { onSend: failingAsyncOnSend }, (request) => insert(request, 'route-hook'))
      app.post('/route-hooks', { onSend: [failingCallbackOnSend] }, (request) => insert(request, 'route-hooks'))
    }
  })
  t.equal((await post(app, '/route-hook')).statusCode, 500)
  t.equal((await post(app, '/route-hooks')).statusCode, 500)
  t.same(await committedNames(db, tenantA), SEEDED)
})

t.test('a route-level onSend hook that another plugin adds from its own onRoute hook', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.register(async function otherPlugin (scope) {
        // As plugins that decorate every route do: appended after whatever the route has.
        scope.addHook('onRoute', function addFailingOnSend (routeOptions: RouteOptions) {
          routeOptions.onSend = [...[routeOptions.onSend ?? []].flat(), failingAsyncOnSend]
        })
        scope.post('/decorated', (request) => insert(request, 'decorated'))
      })
    }
  })
  t.equal((await post(app, '/decorated')).statusCode, 500)
  t.same(await committedNames(db, tenantA), SEEDED)
})

t.test('an onSend hook after the plugin that turns the reply into an error rolls back', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.addHook('onSend', async function rejectLate (_request, reply) { reply.code(502) })
      app.post('/recoded', (request) => insert(request, 'recoded'))
    }
  })
  t.equal((await post(app, '/recoded')).statusCode, 502)
  t.same(await committedNames(db, tenantA), SEEDED)
})

t.test('an onSend hook that leaves a reply Fastify or Node cannot write: an error reply and nothing committed', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/object-payload', { onSend: async () => ({ not: 'serialized' }) }, (request) => insert(request, 'object-payload'))
      app.post('/bad-header', { onSend: async (_request, reply) => { reply.header('x-trace', 'a\nb') } }, (request) => insert(request, 'bad-header'))
      // Fastify drops the body of a 204 whatever it is: no reason to refuse it.
      app.post('/no-content', { onSend: async () => ({ ignored: true }) }, async (request, reply) => {
        await insert(request, 'no-content')
        return reply.code(204).send()
      })
    }
  })
  const objectPayload = await post(app, '/object-payload')
  t.equal(objectPayload.statusCode, 500)
  t.equal(objectPayload.json().code, 'FST_ERR_REP_INVALID_PAYLOAD_TYPE')
  const badHeader = await post(app, '/bad-header')
  t.equal(badHeader.statusCode, 500)
  t.equal(badHeader.json().code, 'ERR_INVALID_CHAR')
  t.equal((await post(app, '/no-content')).statusCode, 204)
  t.same(await committedNames(db, tenantA), [...SEEDED, 'no-content'])
})

t.test('an onSend hook after the plugin can still write in the request transaction', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.addHook('onSend', async function audit (request) { await insert(request, 'audited') })
      app.post('/audited', (request) => insert(request, 'audited-route'))
    }
  })
  t.equal((await post(app, '/audited')).statusCode, 200)
  t.same(await committedNames(db, tenantA), [...SEEDED, 'audited', 'audited-route'])
})

t.test('a route registered on the root before the plugin still commits', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  app.post('/early', (request) => insert(request, 'early'))
  await app.register(fastifyTenantRls, { pool, schema })
  await app.ready()
  t.equal((await post(app, '/early')).statusCode, 200)
  t.same(await committedNames(db, tenantA), [...SEEDED, 'early'])
})

t.test('an encapsulated routes plugin registered before the plugin commits', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(async function earlyRoutes (scope) {
    scope.post('/encapsulated-early', (request) => insert(request, 'encapsulated-early'))
  })
  await app.register(fastifyTenantRls, { pool, schema })
  await app.ready()
  t.equal((await post(app, '/encapsulated-early')).statusCode, 200)
  t.same(await committedNames(db, tenantA), [...SEEDED, 'encapsulated-early'])
})

t.test('routes declared before the plugin: their own onSend hooks, and the app\'s later ones, still run before the commit', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  // onRoute never sees these routes: the commit must still come after every onSend hook they have.
  app.post('/root-early', { onSend: failingAsyncOnSend }, (request) => insert(request, 'root-early'))
  await app.register(async function earlyRoutes (scope) {
    scope.post('/scoped-early', { onSend: [failingCallbackOnSend] }, (request) => insert(request, 'scoped-early'))
    scope.post('/scoped-early-ok', (request) => insert(request, 'scoped-early-ok'))
  })
  await app.register(fastifyTenantRls, { pool, schema })
  await app.register(fp(async function laterPlugin (scope) {
    scope.addHook('onSend', async function failForOne (request) {
      if (request.url === '/scoped-early-ok') throw new Error('onSend failed')
    })
  }))
  await app.ready()
  for (const url of ['/root-early', '/scoped-early', '/scoped-early-ok']) {
    t.equal((await post(app, url)).statusCode, 500, url)
    // Twice: the first request of a route reorders its hooks, the second finds them in place.
    t.equal((await post(app, url)).statusCode, 500, `${url}, again`)
  }
  t.same(await committedNames(db, tenantA), SEEDED, 'nothing committed')
})

t.test('the first tenant request of a route declared before the plugin does not make a reply in flight skip a hook', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  const inSlowHook = gate()
  const release = gate()
  async function slowForAnonymous (request: FastifyRequest): Promise<void> {
    if (request.headers.authorization !== undefined) return
    inSlowHook.open()
    await release.promise
  }
  async function countHook (_request: FastifyRequest, reply: FastifyReply): Promise<void> {
    reply.header('x-counted', 'yes')
  }
  app.post('/early-in-flight', { onSend: [slowForAnonymous, countHook] }, (request) => insert(request, 'in-flight'))
  await app.register(fastifyTenantRls, { pool, schema })
  await app.ready()
  // A 401 runs the route's onSend hooks without the plugin's onRequest having reordered them.
  const anonymous = app.inject({ method: 'POST', url: '/early-in-flight' })
  await inSlowHook.promise
  t.equal((await post(app, '/early-in-flight')).statusCode, 200, 'the tenant request reorders and commits')
  release.open()
  const refused = await anonymous
  t.equal(refused.statusCode, 401)
  t.equal(refused.headers['x-counted'], 'yes', 'the hook after the slow one still ran for the reply in flight')
  t.same(await committedNames(db, tenantA), [...SEEDED, 'in-flight'])
})

t.test('a write after the reply is refused and logged at warn with its route', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>)
      done()
    }
  })
  const app = await buildApp(t, {
    pool,
    fastify: { logger: { level: 'warn', stream } },
    routes (app) {
      app.post('/late/:id', async (request, reply) => {
        reply.send({ accepted: true })
        // The refusal reaches nobody: the client already has its reply.
        await insert(request, 'late').catch(() => {})
      })
    }
  })
  const res = await post(app, '/late/1')
  t.equal(res.statusCode, 200)
  await eventually(() => lines.some((line) => line.code === 'FST_TENANT_RLS_TRANSACTION_CLOSED'), 'the refusal to be logged')
  const warning = lines.find((line) => line.code === 'FST_TENANT_RLS_TRANSACTION_CLOSED')
  t.match(warning, { level: 40, method: 'POST', url: '/late/:id', tenantId: tenantA })
  t.same(await committedNames(db, tenantA), SEEDED)
})

t.test('work after the reply through app.withTenant, as the README shows, is committed', async (t) => {
  let finished: Promise<unknown> = Promise.resolve()
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/later', async (request, reply) => {
        const tenantId = String(request.tenantId)
        reply.code(202).send({ accepted: true })
        finished = app.withTenant(tenantId, (database) => database.insert(projects).values({ tenantId, name: 'later' }))
        await finished
      })
    }
  })
  t.equal((await post(app, '/later')).statusCode, 202)
  await finished
  t.same(await committedNames(db, tenantA), [...SEEDED, 'later'])
})
