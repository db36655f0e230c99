// Register-time validation (a wrong option fails register, never a request) and behaviour 8: the
// plugin refuses to start when the pool's role would bypass RLS.
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import pg from 'pg'
import t from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import { createTestDatabase } from './helpers/database.js'
import { JWT_SECRET, bearer, buildApp, createProjectsTable, projects } from './helpers/fixture.js'

const db = await createTestDatabase(t)
const { tenantA } = await createProjectsTable(db)
const pool = db.appPool()

async function registerWith (options: unknown, withJwt = true): Promise<unknown> {
  const app = Fastify()
  if (withJwt) await app.register(fastifyJwt, { secret: JWT_SECRET })
  try {
    await app.register(fastifyTenantRls, options as never)
    await app.ready()
    return null
  } catch (error) {
    return error
  } finally {
    await app.close()
  }
}

t.test('bad options fail register with a message that says what to change', async (t) => {
  const noTimeout = new pg.Pool({ connectionString: db.url() })
  t.teardown(() => noTimeout.end())
  const cases: Array<[string, unknown, RegExp]> = [
    ['no options', undefined, /options must be an object|pool is required/],
    ['no pool', {}, /pool is required/],
    ['a pool without connectionTimeoutMillis', { pool: noTimeout }, /connectionTimeoutMillis/],
    ['a misspelt option', { pool, claims: 'tenant' }, /unknown option\(s\) claims/],
    ['a claim that is not a string', { pool, claim: 42 }, /claim must be a string/],
    ['an empty claim segment', { pool, claim: 'org..id' }, /dotted path/],
    ['a resolver that is not a function', { pool, resolveTenant: 'tenant_id' }, /resolveTenant must be a function/],
    ['claim and resolver together', { pool, claim: 'org', resolveTenant: () => null }, /either claim or resolveTenant/],
    ['a setting without a dot', { pool, setting: 'tenant' }, /setting must be a custom PostgreSQL setting/],
    ['a setting with quotes', { pool, setting: "app.x'; DROP TABLE projects; --" }, /setting must be a custom PostgreSQL setting/],
    ['a schema that is not an object', { pool, schema: 'public' }, /schema must be the object of drizzle tables/]
  ]
  for (const [name, options, message] of cases) {
    const error = await registerWith(options) as { code?: string, message?: string } | null
    t.equal(error?.code, 'FST_TENANT_RLS_INVALID_OPTION', `${name}: rejected`)
    t.match(error?.message, message, `${name}: explains itself`)
  }
})

t.test('the plugin requires @fastify/jwt to be registered first', async (t) => {
  const error = await registerWith({ pool }, false) as Error | null
  t.match(error?.message, /@fastify\/jwt/)
})

t.test('app.ready() refuses a superuser or BYPASSRLS pool, and says how to fix it', async (t) => {
  const superuser = new pg.Pool({ connectionString: db.adminUrl, connectionTimeoutMillis: 2000 })
  t.teardown(() => superuser.end())
  const superError = await registerWith({ pool: superuser }) as { code?: string, message?: string } | null
  t.equal(superError?.code, 'FST_TENANT_RLS_UNSAFE_ROLE')
  t.match(superError?.message, /is a superuser.*NOSUPERUSER/)

  await db.admin.query(`CREATE ROLE ${db.appRole}_bypass LOGIN BYPASSRLS PASSWORD 'bypass'`)
  t.teardown(() => db.admin.query(`DROP ROLE ${db.appRole}_bypass`))
  const bypassUrl = new URL(db.url())
  bypassUrl.username = `${db.appRole}_bypass`
  bypassUrl.password = 'bypass'
  const bypass = new pg.Pool({ connectionString: bypassUrl.toString(), connectionTimeoutMillis: 2000 })
  t.teardown(() => bypass.end())
  const bypassError = await registerWith({ pool: bypass }) as { code?: string, message?: string } | null
  t.equal(bypassError?.code, 'FST_TENANT_RLS_UNSAFE_ROLE')
  t.match(bypassError?.message, /has BYPASSRLS.*NOBYPASSRLS/)
})

t.test('app.ready() refuses a role that can SET ROLE to a bypassing role, or owns an RLS table', async (t) => {
  await db.admin.query(`CREATE ROLE ${db.appRole}_bypasser NOLOGIN BYPASSRLS`)
  await db.admin.query(`GRANT ${db.appRole}_bypasser TO ${db.appRole}`)
  const memberError = await registerWith({ pool }) as { code?: string, message?: string } | null
  await db.admin.query(`REVOKE ${db.appRole}_bypasser FROM ${db.appRole}; DROP ROLE ${db.appRole}_bypasser`)
  t.equal(memberError?.code, 'FST_TENANT_RLS_UNSAFE_ROLE')
  t.match(memberError?.message, /is a member of .*_bypasser.*REVOKE/)

  await db.admin.query(`CREATE TABLE app_owned (id int); ALTER TABLE app_owned ENABLE ROW LEVEL SECURITY; ALTER TABLE app_owned OWNER TO ${db.appRole}`)
  const ownerError = await registerWith({ pool }) as { code?: string, message?: string } | null
  await db.admin.query('DROP TABLE app_owned')
  t.equal(ownerError?.code, 'FST_TENANT_RLS_UNSAFE_ROLE')
  t.match(ownerError?.message, /owns the RLS table\(s\) app_owned/)
})

t.test('a transaction whose connection opens as another role than the checked one is refused', async (t) => {
  const other = `${db.appRole}_other`
  await db.admin.query(`CREATE ROLE ${other} NOLOGIN; GRANT ${other} TO ${db.appRole}; GRANT SELECT ON projects TO ${other}`)
  t.teardown(() => db.admin.query(`DROP OWNED BY ${other}; DROP ROLE ${other}`))
  // One use per connection: the startup check's connection is gone when the request connects.
  const switching = db.appPool({ maxUses: 1 })
  const app = await buildApp(t, {
    pool: switching,
    routes (app) {
      app.get('/count', async (request) => {
        // Route code that swallows the first error and tries again gets the same refusal.
        await request.db.select().from(projects).catch(() => {})
        return (await request.db.select().from(projects)).length
      })
    }
  })
  switching.on('connect', (client) => { client.query(`SET ROLE ${other}`).catch(() => {}) })
  const res = await app.inject({ url: '/count', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_TENANT_RLS_UNEXPECTED_ROLE')
  t.match(res.json().message, new RegExp(`role "${other}"`))
  await db.assertNoLeaks(t, switching)
})

t.test('a safe role starts', async (t) => {
  const app = await buildApp(t, { pool })
  t.ok(app.hasRequestDecorator('db'))
  t.ok(app.hasDecorator('withTenant'))
})
