// Issue 9, section 4: tenant ids other than UUID, for existing schemas. Each type has one spelling
// per tenant; the others are refused with a 403 before a connection is taken. The schema helpers
// declare the matching column and policy cast, and the kit seeds ids of the type. Tables here are
// declared with the helpers and created from drizzle-kit's own output, with FORCE'd RLS.
import { sql } from 'drizzle-orm'
import { bigint, getTableConfig, pgTable, text, uuid } from 'drizzle-orm/pg-core'
import { generateDrizzleJson, generateMigration } from 'drizzle-kit/api'
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import fastifyTenantRls, { normalizeTenantId, withTenant } from 'fastify-tenant-rls'
import type { TenantIdType } from 'fastify-tenant-rls'
import { createTenantTable, currentTenantSql, tenantTablesSql } from 'fastify-tenant-rls/schema'
import { checkTenantIsolation } from 'fastify-tenant-rls/testing'
import { createTestDatabase } from './helpers/database.js'
import { JWT_SECRET, bearer, buildApp } from './helpers/fixture.js'

const bigTenants = pgTable('big_tenants', { id: bigint('id', { mode: 'bigint' }).primaryKey() })
const slugTenants = pgTable('slug_tenants', { id: text('id').primaryKey() })
const bigDocs = createTenantTable({ tenants: bigTenants.id, tenantIdType: 'bigint' })('big_docs', {
  id: uuid('id').notNull().defaultRandom(),
  title: text('title').notNull()
})
const slugDocs = createTenantTable({ tenants: slugTenants.id, tenantIdType: 'slug' })('slug_docs', {
  id: uuid('id').notNull().defaultRandom(),
  title: text('title').notNull()
})
const schema = { bigTenants, slugTenants, bigDocs, slugDocs }

const db = await createTestDatabase(t)
{
  const statements = await generateMigration(generateDrizzleJson({}), generateDrizzleJson(schema))
  await db.asOwner([...statements, tenantTablesSql(schema, { role: db.appRole }).replaceAll('--> statement-breakpoint', '')].join(';\n'))
}
await db.admin.query("INSERT INTO big_tenants VALUES (7), (8), ('9223372036854775807')")
await db.admin.query("INSERT INTO slug_tenants VALUES ('acme'), ('globex')")
await db.admin.query("INSERT INTO big_docs (tenant_id, title) VALUES (7, 'seven'), (8, 'eight'), ('9223372036854775807', 'max')")
await db.admin.query("INSERT INTO slug_docs (tenant_id, title) VALUES ('acme', 'acme-doc'), ('globex', 'globex-doc')")

const pool = db.appPool()
t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })

async function appFor (t: Test, tenantIdType: TenantIdType, table: string): Promise<Awaited<ReturnType<typeof buildApp>>> {
  return buildApp(t, {
    pool,
    options: { tenantIdType },
    routes (app) {
      app.get('/docs', async (request) => {
        const rows = await request.db.execute<{ title: string }>(sql`SELECT title FROM ${sql.identifier(table)} ORDER BY title`)
        return { tenant: request.tenantId, titles: rows.rows.map((row) => row.title) }
      })
    }
  })
}

async function refusedBeforeAnyConnection (t: Test, app: Awaited<ReturnType<typeof buildApp>>, spellings: unknown[]): Promise<void> {
  let acquired = 0
  const onAcquire = (): void => { acquired++ }
  pool.on('acquire', onAcquire)
  t.teardown(() => { pool.off('acquire', onAcquire) })
  for (const spelling of spellings) {
    const res = await app.inject({ url: '/docs', headers: bearer(app, { tenant_id: spelling }) })
    t.equal(res.statusCode, 403, `${JSON.stringify(spelling)} is refused`)
    t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_INVALID')
  }
  t.equal(acquired, 0, 'no connection was taken')
}

t.test('bigint tenants: one spelling each, and isolation holds', async (t) => {
  const app = await appFor(t, 'bigint', 'big_docs')
  t.same((await app.inject({ url: '/docs', headers: bearer(app, { tenant_id: 7 }) })).json(), { tenant: '7', titles: ['seven'] }, 'a JSON number')
  t.same((await app.inject({ url: '/docs', headers: bearer(app, { tenant_id: '8' }) })).json(), { tenant: '8', titles: ['eight'] }, 'a string')
  t.same((await app.inject({ url: '/docs', headers: bearer(app, { tenant_id: '9223372036854775807' }) })).json(),
    { tenant: '9223372036854775807', titles: ['max'] }, 'the largest bigint, exact as a string')
  await refusedBeforeAnyConnection(t, app, ['07', '+7', ' 7', '7 ', '7.0', '7e0', '0x7', 7.5, -7, '-7', 0, '0',
    '9223372036854775808', 2 ** 53, 'seven', '٧', true, [7]])
})

t.test('slug tenants: one spelling each, and isolation holds', async (t) => {
  const app = await appFor(t, 'slug', 'slug_docs')
  t.same((await app.inject({ url: '/docs', headers: bearer(app, { tenant_id: 'acme' }) })).json(), { tenant: 'acme', titles: ['acme-doc'] })
  t.same((await app.inject({ url: '/docs', headers: bearer(app, { tenant_id: 'globex' }) })).json(), { tenant: 'globex', titles: ['globex-doc'] })
  // 'аcme' starts with a Cyrillic a; 'acme' with a fullwidth m looks the same too.
  await refusedBeforeAnyConnection(t, app, ['Acme', 'ACME', ' acme', 'acme ', 'acme\n', '\u0430cme', 'ac\uff4de', 'acme-', '-acme', 'ac--me',
    'ac_me', 'ac.me', 'a'.repeat(64), 7, ['acme']])
})

t.test('the default stays a canonical UUID, and a uuid app refuses the other types', async (t) => {
  t.equal(normalizeTenantId('7'), null)
  t.equal(normalizeTenantId('acme'), null)
  t.equal(normalizeTenantId(7, 'bigint'), '7')
  t.equal(normalizeTenantId('acme', 'slug'), 'acme')
  t.equal(normalizeTenantId('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'), 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')
})

t.test('withTenant checks ids by the same type, standalone and app.withTenant', async (t) => {
  const titles = (tx: Parameters<Parameters<typeof withTenant>[2]>[0]): Promise<string[]> =>
    tx.execute<{ title: string }>(sql`SELECT title FROM big_docs`).then((result) => result.rows.map((row) => row.title))
  t.same(await withTenant(pool, '7', titles, { tenantIdType: 'bigint' }), ['seven'])
  await t.rejects(withTenant(pool, '007', titles, { tenantIdType: 'bigint' }), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
  await t.rejects(withTenant(pool, '7', titles), { code: 'FST_TENANT_RLS_TENANT_INVALID' }, 'uuid by default')
  await t.rejects(withTenant(pool, '7', titles, { tenantIdType: 'int' as never }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /tenantIdType must be 'uuid', 'bigint' or 'slug'/ })

  const app = await appFor(t, 'slug', 'slug_docs')
  t.same(await app.withTenant('globex', async (tx) => (await tx.execute<{ title: string }>(sql`SELECT title FROM slug_docs`)).rows), [{ title: 'globex-doc' }])
  await t.rejects(app.withTenant('Globex', async () => 'never'), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
})

t.test('an unknown tenantIdType fails register', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  const registered = app.register(fastifyTenantRls, { pool, tenantIdType: 'integer' as never }).then(() => null, (error: unknown) => error)
  t.match(await registered, { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /tenantIdType must be 'uuid', 'bigint' or 'slug', got "integer"/ })
})

t.test('the schema helpers declare the column type and the policy cast of each type', async (t) => {
  const uuidTenants = pgTable('uuid_tenants', { id: uuid('id').primaryKey() })
  const uuidDocs = createTenantTable({ tenants: uuidTenants.id })('uuid_docs', { id: uuid('id').notNull() })
  const cases: Array<[string, ReturnType<typeof getTableConfig>, string, string]> = [
    ['uuid', getTableConfig(uuidDocs), 'uuid', "nullif(current_setting('app.current_tenant_id', true), '')::uuid"],
    ['bigint', getTableConfig(bigDocs), 'bigint', "nullif(current_setting('app.current_tenant_id', true), '')::bigint"],
    ['slug', getTableConfig(slugDocs), 'text', "nullif(current_setting('app.current_tenant_id', true), '')"]
  ]
  for (const [type, config, columnType, current] of cases) {
    t.equal(config.columns.find((column) => column.name === 'tenant_id')?.getSQLType(), columnType, `${type}: tenant_id is ${columnType}`)
    t.equal(currentTenantSql(undefined, type as TenantIdType), current, `${type}: the policy reads the setting as ${columnType}`)
  }
  // In the catalog, as drizzle-kit created them: the column types and the policies' expressions.
  const { rows } = await db.admin.query<{ table: string, type: string, policy: string }>(`
    SELECT c.table_name AS table, c.data_type AS type, p.qual AS policy
    FROM information_schema.columns c JOIN pg_policies p ON p.tablename = c.table_name
    WHERE c.column_name = 'tenant_id' AND c.table_name IN ('big_docs', 'slug_docs') ORDER BY 1`)
  t.same(rows.map((row) => [row.table, row.type]), [['big_docs', 'bigint'], ['slug_docs', 'text']])
  t.match(rows[0]?.policy, /::bigint/)
  t.notMatch(rows[1]?.policy, /::(uuid|bigint)/)
})

t.test('the kit proves isolation with ids of the table\'s type', async (t) => {
  for (const [tenantIdType, table] of [['bigint', 'big_docs'], ['slug', 'slug_docs']] as const) {
    const report = await checkTenantIsolation({ appPool: pool, adminPool: db.admin, tables: [table], tenantIdType })
    t.same(report.failures, [], `${tenantIdType}: no failure`)
    t.ok(report.ok)
  }
  const wrongType = await checkTenantIsolation({ appPool: pool, adminPool: db.admin, tables: ['big_docs'] })
  t.notOk(wrongType.ok, 'uuid ids cannot seed a bigint table: the kit says so rather than passing')
})
