// Behaviour 1-5 of the core: a tenant-scoped request sees, inserts, updates and deletes only its
// own tenant's rows through request.db, and savepoints never end the request's transaction.
import t from 'tap'
import { createTestDatabase } from './helpers/database.js'
import { bearer, buildApp, createProjectsTable, projects } from './helpers/fixture.js'

const db = await createTestDatabase(t)
const { tenantA, tenantB } = await createProjectsTable(db)

t.test('a tenant reads only its own rows', async (t) => {
  const pool = db.appPool()
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.get('/projects', async (request) => {
        const rows = await request.db.select({ name: projects.name }).from(projects).orderBy(projects.name)
        return rows.map((row) => row.name)
      })
    }
  })
  const a = await app.inject({ url: '/projects', headers: bearer(app, { tenant_id: tenantA }) })
  const b = await app.inject({ url: '/projects', headers: bearer(app, { tenant_id: tenantB }) })
  t.equal(a.statusCode, 200)
  t.same(a.json(), ['a-1', 'a-2'])
  t.same(b.json(), ['b-1'])
  await db.assertNoLeaks(t, pool)
})
