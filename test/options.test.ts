// Register-time validation (a wrong option fails register, never a request) and behaviour 8: the
// plugin refuses to start when the pool's role would bypass RLS.
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import pg from 'pg'
import t from 'tap'
import fastifyTenantRls, { inspectPoolRole } from 'fastify-tenant-rls'
import { sharedRoleHardeningSql, sharedRoleSuperuserHardeningSql } from 'fastify-tenant-rls/schema'
import { createTestDatabase } from './helpers/database.js'
import { JWT_SECRET, bearer, buildApp, createProjectsTable, projects } from './helpers/fixture.js'

const db = await createTestDatabase(t)
const { tenantA } = await createProjectsTable(db)
const pool = db.appPool()
const database = new URL(db.url()).pathname.slice(1)

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
    ['no options', undefined, /options must be an object|pool or connectionString is required/],
    ['no pool', {}, /pool or connectionString is required/],
    ['a pool without connectionTimeoutMillis', { pool: noTimeout }, /connectionTimeoutMillis/],
    ['a misspelt option', { pool, claims: 'tenant' }, /unknown option\(s\) claims/],
    ['a claim that is not a string', { pool, claim: 42 }, /claim must be a string/],
    ['an empty claim segment', { pool, claim: 'org..id' }, /dotted path/],
    ['a resolver that is not a function', { pool, resolveTenant: 'tenant_id' }, /resolveTenant must be a function/],
    ['claim and resolver together', { pool, claim: 'org', resolveTenant: () => null }, /either claim or resolveTenant/],
    ['a setting without a dot', { pool, setting: 'tenant' }, /setting must be a custom PostgreSQL setting/],
    ['a setting with quotes', { pool, setting: "app.x'; DROP TABLE projects; --" }, /setting must be a custom PostgreSQL setting/],
    ['a schema that is not an object', { pool, schema: 'public' }, /schema must be the object of drizzle tables/],
    ['a lock timeout that is not a whole number', { pool, lockTimeout: 1.5 }, /lockTimeout must be/],
    ['preparedStatements that is not a boolean', { pool, preparedStatements: 'no' }, /preparedStatements must be true or false/],
    ['preparedRouteQueries that is negative', { pool, preparedRouteQueries: -1 }, /preparedRouteQueries must be an integer from 0/],
    ['preparedRouteQueries that is not whole', { pool, preparedRouteQueries: 2.5 }, /preparedRouteQueries must be an integer from 0/],
    ['preparedRouteQueries above the bound', { pool, preparedRouteQueries: 10001 }, /preparedRouteQueries must be an integer from 0/],
    ['singleRoundTrip with readOnly false', { pool, singleRoundTrip: true, readOnly: false }, /singleRoundTrip runs every query READ ONLY/],
    ['singleRoundTrip that is not a boolean', { pool, singleRoundTrip: 'yes' }, /singleRoundTrip must be true, false or 'safe-methods'/],
    ['preparedRouteQueries without preparedStatements', { pool, preparedStatements: false, preparedRouteQueries: 5 }, /preparedRouteQueries needs preparedStatements/]
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

/** What app.ready() says about the app pool after `setup` (as the superuser), then `undo`. */
async function refusalAfter (setup: string, undo: string): Promise<{ code?: string, message?: string } | null> {
  await db.admin.query(setup)
  try {
    return await registerWith({ pool }) as { code?: string, message?: string } | null
  } finally {
    await db.admin.query(undo)
  }
}

t.test('app.ready() refuses settings stored for the login role or its database that change behaviour, each with its RESET', async (t) => {
  const role = `"${db.appRole}"`
  const cases: Array<[string, string, RegExp]> = [
    ['ALTER ROLE SET search_path', `ALTER ROLE ${role} SET search_path = 'elsewhere'`, new RegExp(`search_path=elsewhere \\(ALTER ROLE \\.\\.\\. SET\\).*ALTER ROLE ${role} RESET "search_path"`)],
    ['ALTER ROLE SET role', `ALTER ROLE ${role} SET role = 'none'`, new RegExp(`role=none .*ALTER ROLE ${role} RESET "role"`)],
    ['ALTER ROLE SET row_security', `ALTER ROLE ${role} SET row_security = off`, /row_security=off/],
    ['ALTER ROLE SET the tenant setting', `ALTER ROLE ${role} SET app.current_tenant_id = '00000000-0000-4000-8000-000000000000'`, /app\.current_tenant_id=.*RESET "app\.current_tenant_id"/],
    ['ALTER ROLE SET default_transaction_read_only', `ALTER ROLE ${role} SET default_transaction_read_only = on`, /default_transaction_read_only=on/],
    ['ALTER ROLE IN DATABASE SET TimeZone', `ALTER ROLE ${role} IN DATABASE ${database} SET TimeZone = 'Asia/Tokyo'`, new RegExp(`TimeZone=Asia/Tokyo \\(ALTER ROLE \\.\\.\\. IN DATABASE.*ALTER ROLE ${role} IN DATABASE "${database}" RESET "TimeZone"`)],
    ['ALTER DATABASE SET client_encoding', `ALTER DATABASE ${database} SET client_encoding = 'LATIN1'`, new RegExp(`client_encoding=LATIN1 \\(ALTER DATABASE.*ALTER DATABASE "${database}" RESET "client_encoding"`)],
    ['ALTER DATABASE SET a custom setting', `ALTER DATABASE ${database} SET app.current_user_id = '7'`, /app\.current_user_id=7/]
  ]
  for (const [name, setup, message] of cases) {
    const error = await refusalAfter(setup, `ALTER ROLE ${role} RESET ALL; ALTER ROLE ${role} IN DATABASE ${database} RESET ALL; ALTER DATABASE ${database} RESET ALL`)
    t.equal(error?.code, 'FST_TENANT_RLS_UNSAFE_ROLE', `${name}: refused`)
    t.match(error?.message, message, `${name}: names the setting and its fix`)
  }
  // The fix the message gives really is the fix: run it, and the role starts.
  await db.admin.query(`ALTER ROLE ${role} IN DATABASE ${database} SET DateStyle = 'SQL'`)
  const error = await registerWith({ pool }) as { message?: string }
  const fix = /fix: (ALTER ROLE [^;]*RESET "DateStyle")/.exec(error.message ?? '')?.[1]
  t.ok(fix, 'the refusal carries a RESET statement')
  await db.admin.query(String(fix))
  t.equal(await registerWith({ pool }), null, 'after the RESET the role starts')
})

t.test('stored timeouts, limits, labels and logging settings are harmless: the role starts', async (t) => {
  const role = `"${db.appRole}"`
  await db.admin.query(`ALTER ROLE ${role} SET statement_timeout = '30s'; ALTER ROLE ${role} SET lock_timeout = '2s';
    ALTER ROLE ${role} IN DATABASE ${database} SET idle_in_transaction_session_timeout = '60s'; ALTER ROLE ${role} SET application_name = 'api';
    ALTER ROLE ${role} SET work_mem = '8MB'; ALTER DATABASE ${database} SET log_min_duration_statement = 250`)
  t.teardown(() => db.admin.query(`ALTER ROLE ${role} RESET ALL; ALTER ROLE ${role} IN DATABASE ${database} RESET ALL; ALTER DATABASE ${database} RESET ALL`))
  t.equal(await registerWith({ pool }), null)
  t.same((await inspectPoolRole(pool)).problems, [])
})

t.test('a setting stored for every role (ALTER ROLE ALL, a superuser\'s to reset) is a warning, not a refusal', async (t) => {
  await db.admin.query("ALTER ROLE ALL SET DateStyle = 'SQL'")
  t.teardown(() => db.admin.query('ALTER ROLE ALL RESET DateStyle'))
  const { problems, warnings } = await inspectPoolRole(pool)
  t.same(problems, [])
  t.match(warnings, [{ role: db.appRole, problem: /DateStyle=SQL \(ALTER ROLE ALL/, fix: /as a superuser: ALTER ROLE ALL RESET "DateStyle"/ }])
})

t.test('app.ready() refuses a shared role that may create temporary tables or objects, or act on every backend', async (t) => {
  const role = `"${db.appRole}"`
  const cases: Array<[string, string, string, RegExp]> = [
    ['TEMPORARY for PUBLIC (a new database\'s default)', `GRANT TEMPORARY ON DATABASE ${database} TO PUBLIC`, `REVOKE TEMPORARY ON DATABASE ${database} FROM PUBLIC`,
      new RegExp(`temporary tables in database "${database}" \\(granted to PUBLIC\\).*REVOKE TEMPORARY ON DATABASE "${database}" FROM PUBLIC`)],
    ['TEMPORARY through a group role', `CREATE ROLE ${db.appRole}_group NOLOGIN; GRANT ${db.appRole}_group TO ${role}; GRANT TEMPORARY ON DATABASE ${database} TO ${db.appRole}_group`,
      `REVOKE ALL ON DATABASE ${database} FROM ${db.appRole}_group; DROP ROLE ${db.appRole}_group`, new RegExp(`FROM ${db.appRole}_group`)],
    ['CREATE on the database', `GRANT CREATE ON DATABASE ${database} TO ${role}`, `REVOKE CREATE ON DATABASE ${database} FROM ${role}`,
      new RegExp(`may create schemas in database.*REVOKE CREATE ON DATABASE "${database}" FROM ${db.appRole}`)],
    ['CREATE on schema public', 'GRANT CREATE ON SCHEMA public TO PUBLIC', 'REVOKE CREATE ON SCHEMA public FROM PUBLIC',
      /may create objects in schema "public" \(granted to PUBLIC\).*REVOKE CREATE ON SCHEMA "public" FROM PUBLIC/],
    ['owning a schema', `CREATE SCHEMA app_owned AUTHORIZATION ${role}`, 'DROP SCHEMA app_owned',
      /member of the owner of schema "app_owned".*ALTER SCHEMA "app_owned" OWNER TO/],
    ['pg_signal_backend', `GRANT pg_signal_backend TO ${role}`, `REVOKE pg_signal_backend FROM ${role}`, /member of pg_signal_backend.*REVOKE pg_signal_backend FROM/],
    ['pg_monitor (pg_read_all_stats)', `GRANT pg_monitor TO ${role}`, `REVOKE pg_monitor FROM ${role}`, /member of pg_read_all_stats/]
  ]
  for (const [name, setup, undo, message] of cases) {
    const error = await refusalAfter(setup, undo)
    t.equal(error?.code, 'FST_TENANT_RLS_UNSAFE_ROLE', `${name}: refused`)
    t.match(error?.message, message, `${name}: says where the grant comes from and how to revoke it`)
  }
  t.equal(await registerWith({ pool }), null, 'every grant undone: the role starts again')
})

t.test('sharedRoleHardeningSql, run by a database owner who is no superuser, is all a refused database needs', async (t) => {
  // A fresh database as PostgreSQL makes it (TEMPORARY for PUBLIC), owned by a plain role.
  const owner = `${db.appRole}_dbowner`
  const fresh = `${database}_fresh`
  await db.admin.query(`CREATE ROLE ${owner} LOGIN PASSWORD 'owner'`)
  await db.admin.query(`CREATE DATABASE ${fresh} OWNER ${owner}`)
  const url = (role: string, password: string): string => {
    const target = new URL(db.url())
    target.pathname = `/${fresh}`
    target.username = role
    target.password = password
    return target.toString()
  }
  const appPool = new pg.Pool({ connectionString: url(db.appRole, 'app-password'), connectionTimeoutMillis: 2000 })
  t.teardown(async () => {
    // end() resolves before the sockets close; DROP ... WITH (FORCE) may still terminate one.
    appPool.on('error', () => {})
    await appPool.end()
    await db.admin.query(`DROP DATABASE ${fresh} WITH (FORCE)`)
    await db.admin.query(`DROP ROLE ${owner}`)
  })
  t.match((await registerWith({ pool: appPool }) as Error).message, /temporary tables in database/, 'refused as created')

  const ownerClient = new pg.Client({ connectionString: url(owner, 'owner') })
  await ownerClient.connect()
  await ownerClient.query(sharedRoleHardeningSql({ role: db.appRole, database: fresh }))
  // The superuser's half, run by the owner, changes nothing and fails nothing: PostgreSQL only warns.
  await ownerClient.query(sharedRoleSuperuserHardeningSql())
  await ownerClient.end()
  t.equal(await registerWith({ pool: appPool }), null, 'starts after the owner\'s hardening')
  const { warnings } = await inspectPoolRole(appPool)
  t.match(warnings.map(({ problem }) => problem), [/signal functions/, /large objects/, /statistics/], 'what only a superuser can revoke stays a warning')
  t.ok(warnings.every(({ fix }) => /as a superuser/.test(fix)))
})

t.test('what only a superuser can revoke is a warning with the fix; the harness\'s hardened database has none', async (t) => {
  t.same(await inspectPoolRole(pool), { role: db.appRole, problems: [], warnings: [] }, 'hardened by the harness: nothing to say')
  const restore = ['FUNCTION pg_terminate_backend(integer, bigint)', 'FUNCTION lo_create(oid)', 'TABLE pg_stat_activity']
  await db.admin.query(restore.map((object) => `GRANT ${object.startsWith('TABLE') ? 'SELECT' : 'EXECUTE'} ON ${object} TO PUBLIC;`).join(''))
  t.teardown(() => db.admin.query(sharedRoleSuperuserHardeningSql()))
  const { problems, warnings } = await inspectPoolRole(pool)
  t.same(problems, [], 'not refused: managed PostgreSQL has no superuser to fix it')
  t.match(warnings, [
    { problem: /end or cancel other tenants' requests.*pg_terminate_backend\(integer,bigint\)/, fix: /as a superuser/ },
    { problem: /large objects.*lo_create\(oid\)/ },
    { problem: /other tenants' activity.*pg_stat_activity/ }
  ])
  t.equal(warnings.length, 3)
  t.equal(await registerWith({ pool }), null, 'the role starts')
})

t.test('a role that cannot execute the commit check\'s own-transaction counters is refused, with the grant that fixes it', async (t) => {
  await db.admin.query('REVOKE EXECUTE ON FUNCTION pg_stat_get_xact_tuples_updated(oid) FROM PUBLIC')
  t.teardown(() => db.admin.query('GRANT EXECUTE ON FUNCTION pg_stat_get_xact_tuples_updated(oid) TO PUBLIC'))
  const error = await registerWith({ pool }) as Error & { code?: string }
  t.equal(error?.code, 'FST_TENANT_RLS_UNSAFE_ROLE')
  t.match(error.message, /cannot execute pg_catalog\.pg_stat_get_xact_tuples_updated\(oid\).*GRANT EXECUTE ON FUNCTION pg_catalog\.pg_stat_get_xact_tuples_updated\(oid\)/)
})

t.test('app.ready() logs each shared-role warning at warn, with its fix', async (t) => {
  await db.admin.query('GRANT EXECUTE ON FUNCTION pg_terminate_backend(integer, bigint) TO PUBLIC')
  t.teardown(() => db.admin.query(sharedRoleSuperuserHardeningSql()))
  const lines: Array<{ level: number, msg: string, fix?: string }> = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } })
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, { pool })
  await app.ready()
  await app.close()
  t.match(lines, [{ level: 40, msg: /pg_terminate_backend/, fix: /as a superuser/ }])
  t.equal(lines.length, 1)
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
