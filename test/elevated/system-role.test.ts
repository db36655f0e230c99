// The system role is the one way around RLS: every unsafe kind is refused with its fix (standalone
// on first use, by the plugin at ready), and the app role can never reach it from a route.
import { sql } from 'drizzle-orm'
import Fastify from 'fastify'
import pg from 'pg'
import t from 'tap'
import type { Test } from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import { checkSystemRole, inspectSystemRole, systemRoleSql, withSystem } from 'fastify-tenant-rls/elevated'
import { bearer, buildApp, committedNames } from '../helpers/fixture.js'
import { elevatedWorld, systemSchema } from '../helpers/elevated.js'

const world = await elevatedWorld(t)
const { db, pool, tenantA, systemRole, systemPool } = world
const job = { actor: 'job:test', reason: 'system role checks' }

/** A role made correct by systemRoleSql, then spoiled by `spoil` (run as the superuser). */
async function spoiledRole (t: Test, spoil: (role: string) => string) {
  return world.loginRole(t, 'NOSUPERUSER', (role) => `${systemRoleSql(systemSchema, { role })}; ${spoil(role)}`)
}

t.test('the role systemRoleSql makes is accepted, standalone and by the plugin', async (t) => {
  t.same(await inspectSystemRole(systemPool, db.appRole), { role: systemRole, problems: [] })
  t.equal(await checkSystemRole(systemPool, db.appRole), systemRole)
  const app = await buildApp(t, { pool, options: { systemPool } })
  const names = await app.withSystem(job, async (db) => (await db.execute<{ name: string }>(sql`SELECT name FROM projects ORDER BY name`)).rows.map((row) => row.name))
  t.same(names, ['a-1', 'a-2', 'b-1'], 'a system job sees every tenant')
})

// `plugin`: what app.ready() answers when it is not the system check's refusal (the app role's own check runs first).
const unsafe: Array<{ name: string, spoil: (role: string) => string, problem: RegExp, fix: RegExp, plugin?: { code: string, message: RegExp } }> = [
  { name: 'a superuser', spoil: (role) => `ALTER ROLE ${role} SUPERUSER`, problem: /is a superuser/, fix: /NOSUPERUSER/ },
  { name: 'a role without BYPASSRLS (cannot see all tenants)', spoil: (role) => `ALTER ROLE ${role} NOBYPASSRLS`, problem: /cannot see all tenants/, fix: /BYPASSRLS/ },
  { name: 'a role the app role is a member of', spoil: (role) => `GRANT ${role} TO ${db.appRole}`, problem: /can be taken on by "[a-z0-9_]+_app"/, fix: /REVOKE "[a-z0-9_]+" FROM "[a-z0-9_]+_app"/, plugin: { code: 'FST_TENANT_RLS_UNSAFE_ROLE', message: /is a member of .*which bypass RLS/ } },
  { name: 'a role that is a member of the app role', spoil: (role) => `GRANT ${db.appRole} TO ${role}`, problem: /is a member of "[a-z0-9_]+_app"/, fix: /REVOKE "[a-z0-9_]+_app" FROM/ },
  { name: 'a role with DELETE on an RLS table', spoil: (role) => `GRANT DELETE ON projects TO ${role}`, problem: /may DELETE from or TRUNCATE the RLS table\(s\) projects/, fix: /REVOKE DELETE, TRUNCATE ON projects/ },
  { name: 'a role with TRUNCATE on an RLS table', spoil: (role) => `GRANT TRUNCATE ON projects TO ${role}`, problem: /TRUNCATE the RLS table\(s\) projects/, fix: /REVOKE DELETE, TRUNCATE/ },
  { name: 'a role with DELETE through PUBLIC', spoil: () => 'GRANT DELETE ON projects TO PUBLIC', problem: /directly, through PUBLIC/, fix: /FROM "[a-z0-9_]+", PUBLIC/ },
  { name: 'a member of pg_write_all_data', spoil: (role) => `GRANT pg_write_all_data TO ${role}`, problem: /may DELETE from or TRUNCATE/, fix: /pg_write_all_data/ },
  { name: 'a table owner', spoil: (role) => `CREATE TABLE owned_by_system (id int); ALTER TABLE owned_by_system OWNER TO ${role}`, problem: /owns owned_by_system/, fix: /OWNER TO the migration role/ },
  { name: 'a role that may CREATE in the schema', spoil: (role) => `GRANT CREATE ON SCHEMA public TO ${role}`, problem: /may create objects in schema\(s\) "public"/, fix: /REVOKE CREATE ON SCHEMA "public"/ }
]

for (const { name, spoil, problem, fix, plugin } of unsafe) {
  t.test(`refused: ${name}`, async (t) => {
    const { pool: unsafePool } = await spoiledRole(t, spoil)
    try {
      const { problems } = await inspectSystemRole(unsafePool, db.appRole)
      t.ok(problems.some((found) => problem.test(found.problem) && fix.test(found.fix)), `problem and fix named: ${JSON.stringify(problems)}`)
      // Standalone: refused on first use, before any job runs or any audit row is written.
      const before = (await world.auditRows()).length
      await t.rejects(withSystem(unsafePool, job, async () => 'ran'), { code: 'FST_TENANT_RLS_UNSAFE_SYSTEM_ROLE', message: problem })
      t.equal((await world.auditRows()).length, before, 'nothing ran')
      // The plugin: refused at ready.
      const app = Fastify()
      t.teardown(() => app.close())
      await app.register(fastifyTenantRls, { pool, verify: async () => ({}), systemPool: unsafePool })
      await t.rejects(async () => { await app.ready() }, plugin ?? { code: 'FST_TENANT_RLS_UNSAFE_SYSTEM_ROLE', message: problem })
    } finally {
      // Shared objects the spoiling created.
      await db.admin.query('REVOKE DELETE ON projects FROM PUBLIC; DROP TABLE IF EXISTS owned_by_system')
    }
  })
}

t.test('refused by the plugin: the app role itself as the system pool (same role, another pool)', async (t) => {
  const sameRole = db.appPool()
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyTenantRls, { pool, verify: async () => ({}), systemPool: sameRole })
  await t.rejects(async () => { await app.ready() }, { code: 'FST_TENANT_RLS_UNSAFE_SYSTEM_ROLE', message: /is the application pool's role/ })
})

t.test('knowing the app role, the plugin says when a membership is with the app role', async (t) => {
  const { pool: memberPool } = await spoiledRole(t, (role) => `GRANT ${role} TO ${db.appRole}`)
  const { problems } = await inspectSystemRole(memberPool, db.appRole)
  t.match(problems[0]?.problem, /the application role among them/)
})

t.test('refused: an app role with CREATEROLE, which could grant itself the system role', async (t) => {
  const { role: creator } = await world.loginRole(t, 'NOSUPERUSER CREATEROLE')
  await t.rejects(checkSystemRole(systemPool, creator), { code: 'FST_TENANT_RLS_UNSAFE_SYSTEM_ROLE', message: /has CREATEROLE.*NOCREATEROLE/ })
})

t.test('route code cannot reach the system role: SET ROLE and SET SESSION AUTHORIZATION through request.db fail', async (t) => {
  const app = await buildApp(t, {
    pool,
    options: { systemPool },
    routes (app) {
      app.post<{ Body: { statement: string } }>('/become', async (request) => {
        await request.db.execute(sql.raw(request.body.statement))
        await request.db.execute(sql`INSERT INTO projects (tenant_id, name) SELECT tenant_id, 'as-system-' || tenant_id FROM projects`)
        return 'became'
      })
    }
  })
  for (const statement of [`SET ROLE ${systemRole}`, `SET SESSION AUTHORIZATION ${systemRole}`, `SET LOCAL ROLE ${systemRole}`]) {
    const reply = await app.inject({ method: 'POST', url: '/become', headers: bearer(app, { tenant_id: tenantA }), payload: { statement } })
    t.equal(reply.statusCode, 500, statement)
    t.equal(reply.json().code, 'FST_TENANT_RLS_QUERY_FAILED', statement)
  }
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], 'nothing written as the system role')
  const { rows } = await db.admin.query('SELECT pg_has_role($1, $2, \'MEMBER\') AS reach', [db.appRole, systemRole])
  t.equal(rows[0].reach, false)
})

t.test('plugin options: systemPool must be a bounded pool of its own; app.withSystem needs it', async (t) => {
  for (const [systemPoolOption, message] of [
    [{}, /systemPool must be a pg.Pool/],
    [pool, /not the application pool/],
    [new pg.Pool({ connectionString: db.adminUrl }), /connectionTimeoutMillis/]
  ] as const) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => {
      await app.register(fastifyTenantRls, { pool, verify: async () => ({}), systemPool: systemPoolOption as pg.Pool })
    }, { code: 'FST_TENANT_RLS_INVALID_OPTION', message })
  }
  const app = await buildApp(t, { pool })
  await t.rejects(app.withSystem(job, async () => 'ran'), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /needs the systemPool option/ })
  await t.rejects(app.withSystem({ actor: 'job:x' } as never, async () => 'ran'), { code: 'FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED' })
})
