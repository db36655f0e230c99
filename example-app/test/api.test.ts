// The example API end to end on a fresh database prepared by the example's own startup steps
// (roles, migrations as the owner, demo seed): each tenant sees and changes only its own rows,
// another tenant's ids answer 404 exactly like unknown ones, duplicates answer 409 without naming
// the other row, and every route validates its input.
import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import t from 'tap'
import type { Test } from 'tap'
import { createTestDatabase } from '../../test/helpers/database.js'
import { newKey } from '../../test/helpers/signed-context.js'
import { buildApp } from '../src/app.js'
import { DEMO, seedDemoData, setUpDatabase } from '../src/database.js'
import * as schema from '../src/schema.js'

const JWT_SECRET = 'example-app-test-secret-long-enough-for-hs256'

const db = await createTestDatabase(t)
const roles = { ownerRole: db.ownerRole, appRole: db.appRole }
const pool = db.appPool()
const signedContext = { keys: [newKey('example-test')] }
await setUpDatabase(db.admin, roles, signedContext)
await seedDemoData(db.admin, db.ownerRole, pool, signedContext)

const app = await buildApp({ pool, jwtSecret: JWT_SECRET, signedContext })
t.teardown(() => app.close())

const ACME = DEMO.acme
const GLOBEX = DEMO.globex
const acmeProject = ACME.projects[0].id
const tokens = new Map([ACME, GLOBEX].map((tenant) => [tenant, app.jwt.sign({ tenant_id: tenant.id })]))

type Tenant = typeof ACME | typeof GLOBEX

function call (as: Tenant, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: Record<string, unknown>) {
  return app.inject({ method, url, headers: { authorization: `Bearer ${tokens.get(as)}` }, ...(payload === undefined ? {} : { payload }) })
}

/** A project row as committed, read through the superuser connection (RLS does not apply to it). */
async function committedProject (id: string): Promise<unknown> {
  const { rows } = await db.admin.query('SELECT tenant_id, name FROM projects WHERE id = $1', [id])
  return rows[0]
}

t.afterEach(async (t: Test) => { await db.assertNoLeaks(t, pool) })

t.test('each tenant lists only its own projects', async (t) => {
  const acme = await call(ACME, 'GET', '/projects')
  const globex = await call(GLOBEX, 'GET', '/projects')
  t.equal(acme.statusCode, 200)
  t.same(acme.json().map((row: { name: string }) => row.name), ['Hiring', 'Website relaunch'])
  t.same(globex.json().map((row: { name: string }) => row.name), ['Moon base'])
  t.same((await call(GLOBEX, 'GET', `/projects/${GLOBEX.projects[0].id}/tasks`)).json().map((row: { title: string }) => row.title), ['Order the rocket'])
})

t.test('another tenant\'s ids answer 404, exactly like ids that do not exist', async (t) => {
  const own = await call(ACME, 'GET', `/projects/${acmeProject}`)
  t.equal(own.statusCode, 200)
  t.equal(own.json().name, 'Website relaunch')

  const unknown = await call(GLOBEX, 'GET', `/projects/${randomUUID()}`)
  t.equal(unknown.statusCode, 404)
  for (const [method, url, payload] of [
    ['GET', `/projects/${acmeProject}`],
    ['PATCH', `/projects/${acmeProject}`, { name: 'Taken over' }],
    ['DELETE', `/projects/${acmeProject}`],
    ['GET', `/projects/${acmeProject}/tasks`],
    ['POST', `/projects/${acmeProject}/tasks`, { title: 'Sneaky' }]
  ] as const) {
    const response = await call(GLOBEX, method, url, payload)
    t.equal(response.statusCode, 404, `${method} ${url}`)
    t.same(response.json(), unknown.json(), 'the same answer as for an unknown id')
  }
  t.same(await committedProject(acmeProject), { tenant_id: ACME.id, name: 'Website relaunch' }, 'the project is untouched')
  const { rows } = await db.admin.query("SELECT count(*)::int AS count FROM tasks WHERE title = 'Sneaky'")
  t.same(rows, [{ count: 0 }], 'no task was hung on another tenant\'s project')

  const [acmeTask] = (await call(ACME, 'GET', `/projects/${acmeProject}/tasks`)).json()
  for (const method of ['GET', 'PATCH', 'DELETE'] as const) {
    const response = await call(GLOBEX, method, `/tasks/${acmeTask.id}`, method === 'PATCH' ? { done: true } : undefined)
    t.equal(response.statusCode, 404, `${method} /tasks/:id`)
  }
  t.equal((await call(ACME, 'GET', `/tasks/${acmeTask.id}`)).json().done, false, 'the task is untouched')
})

t.test('a duplicate answers 409 without naming the other row', async (t) => {
  const duplicate = await call(ACME, 'POST', '/projects', { name: 'Hiring' })
  t.equal(duplicate.statusCode, 409)
  t.same(duplicate.json(), { statusCode: 409, code: 'EXAMPLE_CONFLICT', error: 'Conflict', message: 'A project with this name already exists' })
  const hiring = ACME.projects[1].id
  t.notMatch(duplicate.body, hiring, 'no id of the existing row')
  t.notMatch(duplicate.body, /unique|constraint|tenant_id|Key \(/i, 'no constraint name and no key values')

  const rename = await call(ACME, 'PATCH', `/projects/${acmeProject}`, { name: 'Hiring' })
  t.equal(rename.statusCode, 409, 'renaming onto a taken name')
  t.same(await committedProject(acmeProject), { tenant_id: ACME.id, name: 'Website relaunch' })

  const [task] = ACME.projects[0].tasks
  t.equal((await call(ACME, 'POST', `/projects/${acmeProject}/tasks`, { title: task })).statusCode, 409, 'a task title is unique within its project')

  const otherTenant = await call(GLOBEX, 'POST', '/projects', { name: 'Hiring' })
  t.equal(otherTenant.statusCode, 201, 'the same name is free for another tenant: names are unique per tenant')
  t.teardown(() => db.admin.query('DELETE FROM projects WHERE id = $1', [otherTenant.json().id]))
})

t.test('create, read, update and delete within a tenant', async (t) => {
  const created = await call(GLOBEX, 'POST', '/projects', { name: 'Death ray', description: 'Strictly defensive', tenantId: ACME.id })
  t.equal(created.statusCode, 201)
  const project = created.json()
  t.match(project, { name: 'Death ray', description: 'Strictly defensive', id: String, createdAt: String })
  t.same(await committedProject(project.id), { tenant_id: GLOBEX.id, name: 'Death ray' }, 'stored for the token\'s tenant, whatever the body says')

  const task = await call(GLOBEX, 'POST', `/projects/${project.id}/tasks`, { title: 'Build it' })
  t.equal(task.statusCode, 201)
  t.match(task.json(), { projectId: project.id, title: 'Build it', done: false })

  const updated = await call(GLOBEX, 'PATCH', `/tasks/${task.json().id}`, { done: true })
  t.equal(updated.statusCode, 200)
  t.equal(updated.json().done, true)
  t.equal((await call(GLOBEX, 'PATCH', `/projects/${project.id}`, { description: 'Fully defensive' })).json().description, 'Fully defensive')
  t.same((await call(GLOBEX, 'GET', `/projects/${project.id}/tasks`)).json().map((row: { done: boolean }) => row.done), [true])

  t.equal((await call(GLOBEX, 'DELETE', `/projects/${project.id}`)).statusCode, 204)
  t.equal((await call(GLOBEX, 'GET', `/projects/${project.id}`)).statusCode, 404)
  t.equal((await call(GLOBEX, 'GET', `/tasks/${task.json().id}`)).statusCode, 404, 'its tasks went with it')
  t.equal((await call(GLOBEX, 'DELETE', `/projects/${project.id}`)).statusCode, 404, 'deleting twice')
})

t.test('every route validates its input', async (t) => {
  for (const [method, url, payload] of [
    ['POST', '/projects', {}],
    ['POST', '/projects', { name: '' }],
    ['POST', '/projects', { name: 'x'.repeat(201) }],
    ['POST', '/projects', { name: { an: 'object' } }],
    ['GET', '/projects?limit=0'],
    ['GET', '/projects?limit=101'],
    ['GET', '/projects?offset=-1'],
    ['GET', '/projects/not-a-uuid'],
    ['PATCH', `/projects/${acmeProject}`, {}],
    ['PATCH', '/projects/not-a-uuid', { name: 'x' }],
    ['DELETE', '/projects/not-a-uuid'],
    ['GET', '/projects/not-a-uuid/tasks'],
    ['POST', `/projects/${acmeProject}/tasks`, { done: true }],
    ['POST', `/projects/${acmeProject}/tasks`, { title: 'x', done: 'maybe' }],
    ['GET', '/tasks/not-a-uuid'],
    ['PATCH', `/tasks/${randomUUID()}`, {}],
    ['DELETE', '/tasks/42']
  ] as const) {
    const response = await call(ACME, method, url, payload)
    t.equal(response.statusCode, 400, `${method} ${url} ${JSON.stringify(payload ?? '')}`)
    t.equal(response.json().code, 'FST_ERR_VALIDATION')
  }
  t.same(await committedProject(acmeProject), { tenant_id: ACME.id, name: 'Website relaunch' })
})

t.test('no token, no data; the health check needs none', async (t) => {
  const anonymous = await app.inject({ url: '/projects' })
  t.equal(anonymous.statusCode, 401)
  const forged = await app.inject({ url: '/projects', headers: { authorization: `Bearer ${app.jwt.sign({ tenant_id: ACME.id }, { key: 'another-secret-of-sufficient-length' } as never)}` } })
  t.equal(forged.statusCode, 401, 'a token signed with another key')
  t.same((await app.inject({ url: '/health' })).json(), { ok: true })
})

t.test('signed mode: SQL that writes another tenant into the setting sees and changes nothing of it', async (t) => {
  // What an injection would do inside Acme's transaction: switch the setting to Globex, in a savepoint.
  const seen = await app.withTenant(ACME.id, async (db) => {
    await db.execute(sql`SAVEPOINT switch`)
    await db.execute(sql`SELECT set_config('app.current_tenant_id', ${GLOBEX.id}, true)`)
    const projects = await db.select().from(schema.projects)
    const renamed = await db.update(schema.projects).set({ name: 'Taken over' }).returning()
    await db.execute(sql`ROLLBACK TO SAVEPOINT switch`)
    return { projects: projects.length, renamed: renamed.length }
  })
  t.same(seen, { projects: 0, renamed: 0 })
  t.same(await committedProject(GLOBEX.projects[0].id), { tenant_id: GLOBEX.id, name: 'Moon base' }, 'Globex\'s project is untouched')
})

t.test('the startup steps can run again on a prepared database', async (t) => {
  const before = await db.admin.query('SELECT (SELECT count(*) FROM projects)::int AS projects, (SELECT count(*) FROM tasks)::int AS tasks')
  await setUpDatabase(db.admin, roles, signedContext)
  await seedDemoData(db.admin, db.ownerRole, pool, signedContext)
  const { rows: keys } = await db.admin.query('SELECT id FROM tenant_rls.signing_keys')
  t.same(keys, [{ id: 'example-test' }], 'the key was installed once')
  const after = await db.admin.query('SELECT (SELECT count(*) FROM projects)::int AS projects, (SELECT count(*) FROM tasks)::int AS tasks')
  t.same(after.rows, before.rows, 'nothing was added twice')
})
