// Support impersonation on the request path, through HTTP: a token with an actor claim is admitted
// only under a live grant of that operator for that tenant (checked in the opening, so a refused
// request runs no route query and commits nothing), is READ ONLY unless the grant allows writes,
// warns on every break-glass use, and leaves an audit row the route cannot forge or erase.
import { Writable } from 'node:stream'
import { sql } from 'drizzle-orm'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import { createGrant, listGrants, openBreakGlass, revokeGrant } from 'fastify-tenant-rls/elevated'
import type { FastifyTenantRlsSettings } from 'fastify-tenant-rls'
import { elevatedWorld } from '../helpers/elevated.js'
import { bearer, buildApp, committedNames, projects } from '../helpers/fixture.js'

const world = await elevatedWorld(t)
const { db, pool, tenantA, tenantB, systemPool } = world
const alice = 'support:alice@example.com'
const bob = 'lead:bob@example.com'
const ticket = 'ticket #4711: invoices missing'

t.afterEach(async () => {
  await db.admin.query('DELETE FROM tenant_rls_grants')
})

interface LogLine { level: number, msg: string, operator?: string, grantId?: string }

/** An app with the test routes; `audited`: with the system pool, through which impersonated requests are recorded. */
async function app (t: Test, options: Partial<FastifyTenantRlsSettings> = {}, audited = true): Promise<{ app: FastifyInstance, logs: LogLine[] }> {
  const logs: LogLine[] = []
  const stream = new Writable({
    write (chunk, _encoding, callback) {
      logs.push(JSON.parse(String(chunk)))
      callback()
    }
  })
  const built = await buildApp(t, {
    pool,
    options: { ...(audited ? { systemPool } : {}), ...options },
    fastify: { logger: { level: 'warn', stream } },
    routes (app) {
      app.get('/projects', async (request) => (await request.db.select({ name: projects.name }).from(projects)).map((row) => row.name).sort())
      app.post<{ Body: { name: string } }>('/projects', async (request) => {
        await request.db.insert(projects).values({ tenantId: String(request.tenantId), name: request.body.name })
        return { ok: true }
      })
      // A careless route: swallows the refusal of its first query and answers 200 anyway.
      app.post<{ Body: { name: string } }>('/projects/careless', async (request) => {
        await request.db.insert(projects).values({ tenantId: String(request.tenantId), name: request.body.name }).catch(() => {})
        return { ok: true }
      })
      // A hostile route: tries to lift READ ONLY before writing.
      app.post<{ Body: { name: string } }>('/projects/unlock', async (request) => {
        await request.db.execute(sql`SELECT 1`)
        await request.db.execute(sql`SET transaction_read_only = off`)
        await request.db.insert(projects).values({ tenantId: String(request.tenantId), name: request.body.name })
        return { ok: true }
      })
      // A hostile route: tries to forge or erase audit rows as the app role.
      app.post('/audit/forge', async (request) => {
        await request.db.execute(sql`INSERT INTO tenant_rls_audit (event, actor, tenant_id) VALUES ('impersonation.request', 'nobody', ${String(request.tenantId)})`)
        return { ok: true }
      })
      app.post('/audit/erase', async (request) => {
        await request.db.execute(sql`DELETE FROM tenant_rls_audit`)
        return { ok: true }
      })
      // Its first query leaves a trace no rollback undoes: a sequence advances even in a transaction rolled back.
      app.get('/probe', async (request) => {
        await request.db.execute(sql`SELECT pg_catalog.nextval('impersonation_probe')`)
        return { ok: true }
      })
      app.get('/whoami', async (request) => ({ tenant: request.tenantId }))
    }
  })
  return { app: built, logs }
}

function as (app: FastifyInstance, operator: string | undefined, tenant = tenantA): { authorization: string } {
  return bearer(app, operator === undefined ? { tenant_id: tenant } : { tenant_id: tenant, act: { sub: operator } })
}

async function requestRows (since: number) {
  return (await world.auditRows()).slice(since).filter((row) => row.event === 'impersonation.request')
}

t.test('ordinary requests: no admission, no audit row, writes as before', async (t) => {
  const { app: server } = await app(t)
  const since = (await world.auditRows()).length
  const read = await server.inject({ method: 'GET', url: '/projects', headers: as(server, undefined) })
  t.equal(read.statusCode, 200)
  t.same(read.json(), ['a-1', 'a-2'])
  const write = await server.inject({ method: 'POST', url: '/projects', headers: as(server, undefined), payload: { name: 'ordinary' } })
  t.equal(write.statusCode, 200)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'ordinary'])
  t.equal((await world.auditRows()).length, since, 'nothing recorded')
})

t.test('a grant admits its operator: reads, audited with operator, tenant, grant, method, route and status', async (t) => {
  const { app: server, logs } = await app(t)
  const grant = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  const since = (await world.auditRows()).length
  const read = await server.inject({ method: 'GET', url: '/projects', headers: as(server, alice) })
  t.equal(read.statusCode, 200)
  t.same(read.json(), ['a-1', 'a-2'], 'the tenant\'s rows, and only them')
  t.match(await requestRows(since), [{ actor: alice, tenant_id: tenantA, grant_id: grant.id, detail: { method: 'GET', route: '/projects', status: 200, admission: 'admitted', write: false, breakGlass: false, statementCount: 1, statements: [{ command: 'SELECT', tables: ['projects'], rows: 2 }] } }])
  t.same(logs.filter((line) => line.level >= 40), [], 'a support grant is not warned about')
})

t.test('every denial is a 403 with its own code, the route\'s first query skipped, nothing committed, the refusal recorded', async (t) => {
  const { app: server, logs } = await app(t)
  const mallory = 'support:mallory@example.com'
  const cases: Array<[string, () => Promise<unknown>]> = [
    ['no grant', async () => {}],
    ['another operator\'s grant', () => createGrant(systemPool, { operator: mallory, tenantId: tenantA, reason: ticket, approver: bob, write: true })],
    ['another tenant\'s grant', () => createGrant(systemPool, { operator: alice, tenantId: tenantB, reason: ticket, approver: bob, write: true })],
    ['an expired grant', async () => {
      const grant = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob, write: true, minutes: 1 })
      await db.admin.query('UPDATE tenant_rls_grants SET created_at = now() - interval \'2 minutes\', expires_at = now() - interval \'1 second\' WHERE id = $1', [grant.id])
    }],
    ['a revoked grant', async () => {
      const grant = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob, write: true })
      await revokeGrant(systemPool, grant.id, { by: bob, reason: 'solved' })
    }],
    ['a self-approved grant (its constraint dropped by a migration)', async () => {
      await db.asOwner('ALTER TABLE tenant_rls_grants DROP CONSTRAINT tenant_rls_grants_four_eyes')
      t.teardown(async () => {
        await db.admin.query('DELETE FROM tenant_rls_grants')
        await db.asOwner('ALTER TABLE tenant_rls_grants ADD CONSTRAINT tenant_rls_grants_four_eyes CHECK (lower(approver) <> lower(operator))')
      })
      await db.admin.query('INSERT INTO tenant_rls_grants (tenant_id, operator, approver, reason, write, expires_at) VALUES ($1, $2, $3, $4, true, now() + interval \'10 minutes\')', [tenantA, alice, alice.toUpperCase(), ticket])
    }]
  ]
  for (const [name, setup] of cases) {
    await db.admin.query('DELETE FROM tenant_rls_grants')
    await setup()
    const since = (await world.auditRows()).length
    for (const url of ['/projects', '/projects/careless']) {
      const reply = await server.inject({ method: 'POST', url, headers: as(server, alice), payload: { name: 'impersonated' } })
      t.equal(reply.statusCode, url === '/projects' ? 403 : 500, `${name}: ${url} refused`)
      if (url === '/projects') t.equal(reply.json().code, 'FST_TENANT_RLS_IMPERSONATION_REFUSED', name)
    }
    t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], `${name}: nothing committed`)
    t.same(logs.filter((line) => /discarded/.test(line.msg)), [], `${name}: the connection kept`)
    t.match(await requestRows(since), [
      { actor: alice, tenant_id: tenantA, grant_id: null, detail: { method: 'POST', route: '/projects', status: 403, admission: 'refused' } },
      { actor: alice, tenant_id: tenantA, grant_id: null, detail: { route: '/projects/careless', status: 500, admission: 'refused' } }
    ], `${name}: recorded`)
  }
})

t.test('a refused admission fails inside the opening: PostgreSQL never runs the route\'s first query', async (t) => {
  await db.asOwner(`CREATE SEQUENCE impersonation_probe; GRANT USAGE ON SEQUENCE impersonation_probe TO ${db.appRole}`)
  t.teardown(() => db.asOwner('DROP SEQUENCE impersonation_probe'))
  const { app: server } = await app(t)
  const probed = async (): Promise<boolean> => (await db.admin.query('SELECT is_called FROM impersonation_probe')).rows[0].is_called
  const refused = await server.inject({ method: 'GET', url: '/probe', headers: as(server, alice) })
  t.equal(refused.statusCode, 403)
  t.equal(await probed(), false, 'the sequence never advanced')
  // nextval writes: a read-only grant would refuse it.
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob, write: true })
  t.equal((await server.inject({ method: 'GET', url: '/probe', headers: as(server, alice) })).statusCode, 200)
  t.equal(await probed(), true, 'control: admitted, the query runs')
})

t.test('a read-only grant cannot write, nor lift READ ONLY; a writing grant writes', async (t) => {
  const { app: server } = await app(t)
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  const write = await server.inject({ method: 'POST', url: '/projects', headers: as(server, alice), payload: { name: 'read-only' } })
  t.equal(write.statusCode, 403)
  t.equal(write.json().code, 'FST_TENANT_RLS_READ_ONLY_TRANSACTION')
  const unlock = await server.inject({ method: 'POST', url: '/projects/unlock', headers: as(server, alice), payload: { name: 'unlocked' } })
  t.equal(unlock.statusCode, 500, 'SET transaction_read_only = off is refused once a query ran')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], 'nothing committed')

  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob, write: true })
  const since = (await world.auditRows()).length
  const allowed = await server.inject({ method: 'POST', url: '/projects', headers: as(server, alice), payload: { name: 'written' } })
  t.equal(allowed.statusCode, 200)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'written'])
  const [row] = await requestRows(since)
  t.same(row?.detail.statements, [{ command: 'INSERT', tables: ['projects'], rows: 1 }], 'the statement recorded: command, tables and row count')
  t.notMatch(JSON.stringify(row), /written/, 'never a parameter value')
})

t.test('revoking a grant stops the very next request', async (t) => {
  const { app: server } = await app(t)
  const grant = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  t.equal((await server.inject({ method: 'GET', url: '/projects', headers: as(server, alice) })).statusCode, 200)
  await revokeGrant(systemPool, grant.id, { by: bob, reason: 'solved' })
  const next = await server.inject({ method: 'GET', url: '/projects', headers: as(server, alice) })
  t.equal(next.statusCode, 403)
  t.equal(next.json().code, 'FST_TENANT_RLS_IMPERSONATION_REFUSED')
})

t.test('break-glass: warned on every use, flagged in the trail, listed unreviewed', async (t) => {
  const { app: server, logs } = await app(t)
  const glass = await openBreakGlass(systemPool, { operator: alice, tenantId: tenantB, reason: 'incident #12: tenant B down' })
  const since = (await world.auditRows()).length
  for (let i = 0; i < 2; i++) {
    const reply = await server.inject({ method: 'GET', url: '/projects', headers: as(server, alice, tenantB) })
    t.equal(reply.statusCode, 200)
    t.same(reply.json(), ['b-1'])
  }
  const warnings = logs.filter((line) => line.level === 40 && /break-glass/.test(line.msg))
  t.equal(warnings.length, 2, 'one warning per use')
  t.match(warnings[0], { operator: alice, grantId: glass.id })
  t.match(await requestRows(since), [{ grant_id: glass.id, detail: { breakGlass: true, admission: 'admitted' } }, { grant_id: glass.id }])
  t.same((await listGrants(systemPool, { unreviewed: true })).map((grant) => grant.id), [glass.id])
})

t.test('route code cannot forge or erase audit rows', async (t) => {
  const { app: server } = await app(t)
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob, write: true })
  const before = await world.auditRows()
  for (const url of ['/audit/forge', '/audit/erase']) {
    const reply = await server.inject({ method: 'POST', url, headers: as(server, alice) })
    t.equal(reply.statusCode, 500, `${url} refused`)
  }
  const after = await world.auditRows()
  t.same(after.slice(0, before.length), before, 'nothing erased')
  t.same(after.slice(before.length).map((row) => [row.actor, row.detail.route, row.detail.status]), [[alice, '/audit/forge', 500], [alice, '/audit/erase', 500]], 'only the plugin\'s own rows added')
})

t.test('a request that never queries is recorded as unchecked', async (t) => {
  const { app: server } = await app(t)
  const since = (await world.auditRows()).length
  const reply = await server.inject({ method: 'GET', url: '/whoami', headers: as(server, alice) })
  t.equal(reply.statusCode, 200)
  t.match(await requestRows(since), [{ actor: alice, grant_id: null, detail: { route: '/whoami', admission: 'unchecked' } }])
})

t.test('a malformed actor claim, or no system pool to audit through, is refused before any connection', async (t) => {
  const { app: server } = await app(t)
  for (const act of [{ sub: 42 }, { sub: '' }, { sub: ' alice' }, { sub: 'x'.repeat(201) }, { sub: null }]) {
    const reply = await server.inject({ method: 'GET', url: '/projects', headers: bearer(server, { tenant_id: tenantA, act }) })
    t.equal(reply.statusCode, 403, JSON.stringify(act))
    t.equal(reply.json().code, 'FST_TENANT_RLS_IMPERSONATION_REFUSED')
  }
  const { app: unaudited } = await app(t, {}, false)
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  const reply = await unaudited.inject({ method: 'GET', url: '/projects', headers: as(unaudited, alice) })
  t.equal(reply.statusCode, 403)
  t.match(reply.json(), { code: 'FST_TENANT_RLS_IMPERSONATION_REFUSED', message: /systemPool/ })
})

t.test('actorClaim names another claim; the default act.sub is then an ordinary claim', async (t) => {
  const { app: server } = await app(t, { actorClaim: 'support.operator' })
  const refused = await server.inject({ method: 'GET', url: '/projects', headers: bearer(server, { tenant_id: tenantA, support: { operator: alice } }) })
  t.equal(refused.statusCode, 403)
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  const admitted = await server.inject({ method: 'GET', url: '/projects', headers: bearer(server, { tenant_id: tenantA, support: { operator: alice } }) })
  t.equal(admitted.statusCode, 200)
  await t.rejects(app(t, { actorClaim: 'a b' }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /actorClaim/ })
})

t.test('single-round-trip mode admits and refuses the same way', async (t) => {
  const { app: server } = await app(t, { singleRoundTrip: true })
  const refused = await server.inject({ method: 'GET', url: '/projects', headers: as(server, alice) })
  t.equal(refused.statusCode, 403)
  t.equal(refused.json().code, 'FST_TENANT_RLS_IMPERSONATION_REFUSED')
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  const admitted = await server.inject({ method: 'GET', url: '/projects', headers: as(server, alice) })
  t.equal(admitted.statusCode, 200)
  t.same(admitted.json(), ['a-1', 'a-2'])
})

t.test('an audit row that cannot be written withholds the reply', async (t) => {
  // A trail the system role cannot write to (no such table): the row fails, so does the reply.
  const { app: server, logs } = await app(t, { auditTable: 'public.no_such_trail' })
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  const reply = await server.inject({ method: 'GET', url: '/projects', headers: as(server, alice) })
  t.equal(reply.statusCode, 403)
  t.match(reply.json(), { code: 'FST_TENANT_RLS_IMPERSONATION_REFUSED', message: /could not be recorded/ })
  t.notMatch(reply.body, /a-1/, 'no tenant data left')
  t.ok(logs.some((line) => line.level === 50 && /could not be recorded/.test(line.msg)), 'logged as an error')
})
