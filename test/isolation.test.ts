// Behaviours 3 and 5 of the core, with two tenants: through request.db a tenant reads, inserts,
// updates and deletes only its own rows; savepoints never end the request's transaction; and on a
// pool of one connection, alternating tenants never see each other's setting or rows.
import { eq, sql } from 'drizzle-orm'
import t from 'tap'
import { createTestDatabase } from './helpers/database.js'
import { bearer, buildApp, committedNames, createProjectsTable, projects } from './helpers/fixture.js'

const db = await createTestDatabase(t)
const { tenantA, tenantB } = await createProjectsTable(db)
const { rows: [bProject] } = await db.admin.query<{ id: string }>("SELECT id FROM projects WHERE name = 'b-1'")
const bProjectId = String(bProject?.id)

const pool = db.appPool()
const app = await buildApp(t, {
  pool,
  routes (app) {
    app.get('/projects', async (request) => {
      const rows = await request.db.select({ name: projects.name }).from(projects).orderBy(projects.name)
      return rows.map((row) => row.name)
    })
    app.get('/projects/:id', async (request, reply) => {
      const { id } = request.params as { id: string }
      const [row] = await request.db.select().from(projects).where(eq(projects.id, id))
      return row ?? reply.code(404).send({ missing: id })
    })
    app.post('/projects', async (request) => {
      const { name, tenantId } = request.body as { name: string, tenantId?: string }
      const [row] = await request.db.insert(projects).values({ name, tenantId: tenantId ?? String(request.tenantId) }).returning()
      return row
    })
    app.patch('/projects/:id', async (request) => {
      const { id } = request.params as { id: string }
      const changes = request.body as { name?: string, tenantId?: string }
      const rows = await request.db.update(projects).set(changes).where(eq(projects.id, id)).returning()
      return { updated: rows.length }
    })
    app.delete('/projects/:id', async (request) => {
      const { id } = request.params as { id: string }
      const rows = await request.db.delete(projects).where(eq(projects.id, id)).returning()
      return { deleted: rows.length }
    })
    app.get('/setting', async (request) => {
      const result = await request.db.execute<{ value: string }>(sql`SELECT current_setting('app.current_tenant_id', true) AS value`)
      return { value: result.rows[0]?.value }
    })
  }
})
const asA = bearer(app, { tenant_id: tenantA })
const asB = bearer(app, { tenant_id: tenantB })

t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })

t.test('a tenant lists only its own rows', async (t) => {
  t.same((await app.inject({ url: '/projects', headers: asA })).json(), ['a-1', 'a-2'])
  t.same((await app.inject({ url: '/projects', headers: asB })).json(), ['b-1'])
})

t.test("a tenant cannot read another tenant's row by id", async (t) => {
  const res = await app.inject({ url: `/projects/${bProjectId}`, headers: asA })
  t.equal(res.statusCode, 404)
  t.equal((await app.inject({ url: `/projects/${bProjectId}`, headers: asB })).statusCode, 200)
})

t.test('inserting a row for another tenant fails WITH CHECK (403) and commits nothing', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/projects', headers: asA, payload: { name: 'smuggled', tenantId: tenantB } })
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'FST_TENANT_RLS_ROW_FORBIDDEN')
  t.notMatch(res.body, /row-level security|projects|smuggled/, 'no database detail reaches the client')
  t.same(await committedNames(db, tenantB), ['b-1'])
})

t.test('inserting a row for its own tenant commits it', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/projects', headers: asA, payload: { name: 'a-new' } })
  t.equal(res.statusCode, 200)
  t.equal(res.json().tenantId, tenantA)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'a-new'])
  await db.admin.query("DELETE FROM projects WHERE name = 'a-new'")
})

t.test("updating or deleting another tenant's row touches 0 rows", async (t) => {
  const update = await app.inject({ method: 'PATCH', url: `/projects/${bProjectId}`, headers: asA, payload: { name: 'hijacked' } })
  t.same(update.json(), { updated: 0 })
  const remove = await app.inject({ method: 'DELETE', url: `/projects/${bProjectId}`, headers: asA })
  t.same(remove.json(), { deleted: 0 })
  t.same(await committedNames(db, tenantB), ['b-1'])
})

t.test("moving one's own row to another tenant fails WITH CHECK (403)", async (t) => {
  const { rows: [aProject] } = await db.admin.query<{ id: string }>("SELECT id FROM projects WHERE name = 'a-1'")
  const res = await app.inject({ method: 'PATCH', url: `/projects/${String(aProject?.id)}`, headers: asA, payload: { tenantId: tenantB } })
  t.equal(res.statusCode, 403)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
  t.same(await committedNames(db, tenantB), ['b-1'])
})

t.test('route code cannot change the tenant a request runs as', async (t) => {
  const local = await buildApp(t, {
    pool,
    routes (app) {
      app.get('/retarget', async (request) => {
        try {
          (request as { tenantId: string | null }).tenantId = tenantB
        } catch {}
        const rows = await request.db.select({ tenantId: projects.tenantId }).from(projects)
        return { tenantId: request.tenantId, seen: [...new Set(rows.map((row) => row.tenantId))] }
      })
    }
  })
  const res = await local.inject({ url: '/retarget', headers: bearer(local, { tenant_id: tenantA }) })
  t.same(res.json(), { tenantId: tenantA, seen: [tenantA] })
})

t.test('request.db.transaction() is a savepoint inside the request transaction', async (t) => {
  const local = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/nested', async (request) => {
        await request.db.insert(projects).values({ name: 'outer', tenantId: String(request.tenantId) })
        // A rolled-back nested transaction undoes only its own work...
        await request.db.transaction(async (tx) => {
          await tx.insert(projects).values({ name: 'inner-rolled-back', tenantId: String(request.tenantId) })
          tx.rollback()
        }).catch(() => {})
        // ...and a committed one does not commit the request: it is released, not COMMITted.
        await request.db.transaction(async (tx) => {
          await tx.insert(projects).values({ name: 'inner-kept', tenantId: String(request.tenantId) })
        })
        const visibleElsewhere = await db.admin.query("SELECT 1 FROM projects WHERE name = 'inner-kept'")
        const setting = await request.db.execute<{ value: string }>(sql`SELECT current_setting('app.current_tenant_id', true) AS value`)
        // (pg_stat_activity is closed to the app role by the shared-role hardening; the transaction id answers the same.)
        const status = await request.db.execute<{ depth: number }>(sql`SELECT (pg_current_xact_id_if_assigned() IS NOT NULL)::int AS depth`)
        return { visibleElsewhere: visibleElsewhere.rowCount, setting: setting.rows[0]?.value, inTransaction: status.rows[0]?.depth }
      })
      app.post('/nested-then-fail', async (request) => {
        await request.db.transaction(async (tx) => {
          await tx.insert(projects).values({ name: 'inner-then-outer-fails', tenantId: String(request.tenantId) })
        })
        throw new Error('the route fails after its nested transaction succeeded')
      })
    }
  })
  const res = await local.inject({ method: 'POST', url: '/nested', headers: bearer(local, { tenant_id: tenantA }) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { visibleElsewhere: 0, setting: tenantA, inTransaction: 1 }, 'not committed mid-request, tenant setting still in force')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'inner-kept', 'outer'])
  await db.admin.query("DELETE FROM projects WHERE name IN ('outer', 'inner-kept')")

  const failed = await local.inject({ method: 'POST', url: '/nested-then-fail', headers: bearer(local, { tenant_id: tenantA }) })
  t.equal(failed.statusCode, 500)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], 'the savepoint was rolled back with the request')
})

t.test('alternating tenants on a pool of one connection never see each other', async (t) => {
  const single = db.appPool({ max: 1 })
  const pids = new Set<number>()
  const local = await buildApp(t, {
    pool: single,
    routes (app) {
      app.get('/seen', async (request) => {
        const setting = await request.db.execute<{ value: string, pid: number }>(sql`SELECT current_setting('app.current_tenant_id', true) AS value, pg_backend_pid() AS pid`)
        const rows = await request.db.select({ tenantId: projects.tenantId }).from(projects)
        pids.add(Number(setting.rows[0]?.pid))
        return { setting: setting.rows[0]?.value, tenants: [...new Set(rows.map((row) => row.tenantId))] }
      })
    }
  })
  const tokens = { [tenantA]: bearer(local, { tenant_id: tenantA }), [tenantB]: bearer(local, { tenant_id: tenantB }) }
  for (let i = 0; i < 40; i++) {
    const tenant = i % 2 === 0 ? tenantA : tenantB
    const res = await local.inject({ url: '/seen', headers: tokens[tenant] ?? {} })
    t.same(res.json(), { setting: tenant, tenants: [tenant] }, `request ${i} saw only ${tenant === tenantA ? 'A' : 'B'}`)
  }
  // Between requests the connection carries no tenant: the setting was transaction-local.
  const client = await single.connect()
  const { rows } = await client.query<{ value: string | null }>("SELECT current_setting('app.current_tenant_id', true) AS value")
  client.release()
  t.ok(rows[0]?.value === '' || rows[0]?.value === null, 'no tenant setting survives on the idle connection')
  t.equal(pids.size, 1, 'all requests shared one backend: a clean connection is reused, not discarded')
  await db.assertNoLeaks(t, single)
})
