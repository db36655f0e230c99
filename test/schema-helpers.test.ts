// fastify-tenant-rls/schema against a real database: tables declared with the helpers, turned into
// migrations by drizzle-kit (plus tenantTablesSql) and applied by drizzle's migrator as the owner,
// meet every item of the tenant-table checklist, in the catalog and in behaviour.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'
import { migrate } from 'drizzle-orm/node-postgres/migrator'
import { pgTable, text, uuid } from 'drizzle-orm/pg-core'
import { generateDrizzleJson, generateMigration } from 'drizzle-kit/api'
import t from 'tap'
import { withTenant } from 'fastify-tenant-rls'
import { createTenantTable, tenantForeignKey, tenantTablesSql, tenantUnique } from 'fastify-tenant-rls/schema'
import { createTestDatabase } from './helpers/database.js'

const tenants = pgTable('tenants', { id: uuid('id').primaryKey().defaultRandom() })
const tenantTable = createTenantTable({ tenants: tenants.id })
const parents = tenantTable('parents', {
  id: uuid('id').notNull().defaultRandom(),
  code: text('code').notNull()
}, (t) => [tenantUnique(t.code)])
const children = tenantTable('children', {
  id: uuid('id').notNull().defaultRandom(),
  parentId: uuid('parent_id').notNull()
}, (t) => [tenantForeignKey(t.parentId, parents)])
const schema = { tenants, parents, children }
const TENANT_TABLES = ['parents', 'children']

/** The SQL `drizzle-kit generate` writes for `tables`, from an empty database. */
async function generatedSql (tables: Record<string, unknown>): Promise<string[]> {
  return generateMigration(generateDrizzleJson({}), generateDrizzleJson(tables))
}

// A migrations folder as drizzle-kit lays it out: the generated migration, then the custom one.
async function writeMigrations (folder: string, migrations: Array<{ tag: string, statements: string[] }>): Promise<void> {
  await mkdir(join(folder, 'meta'), { recursive: true })
  const entries = migrations.map(({ tag }, idx) => ({ idx, version: '7', when: 1_700_000_000_000 + idx, tag, breakpoints: true }))
  await writeFile(join(folder, 'meta', '_journal.json'), JSON.stringify({ version: '7', dialect: 'postgresql', entries }))
  for (const { tag, statements } of migrations) {
    await writeFile(join(folder, `${tag}.sql`), statements.join('\n--> statement-breakpoint\n'))
  }
}

const db = await createTestDatabase(t)
const folder = await mkdtemp(join(tmpdir(), 'tenant-rls-migrations-'))
t.teardown(() => rm(folder, { recursive: true, force: true }))
await writeMigrations(folder, [
  { tag: '0000_tables', statements: await generatedSql(schema) },
  { tag: '0001_force_rls_and_grants', statements: [tenantTablesSql(schema, { role: db.appRole })] }
])
// drizzle's migrator keeps its journal in its own schema, which the owner creates.
await db.admin.query(`GRANT CREATE ON DATABASE ${new URL(db.url()).pathname.slice(1)} TO ${db.ownerRole}`)
{
  const client = await db.admin.connect()
  await client.query(`SET ROLE ${db.ownerRole}`)
  await migrate(drizzle(client), { migrationsFolder: folder })
  await client.query('RESET ROLE')
  client.release()
}

const tenantA = randomUUID()
const tenantB = randomUUID()
await db.admin.query('INSERT INTO tenants (id) VALUES ($1), ($2)', [tenantA, tenantB])
const pool = db.appPool()

/** The SQLSTATE `work` fails with (drizzle keeps pg's error as `cause`), or 'no error'. */
async function failureOf (work: Promise<unknown>): Promise<unknown> {
  try {
    await work
  } catch (error) {
    return (error as { cause?: { code?: unknown } }).cause?.code
  }
  return 'no error'
}

t.test('drizzle-kit plus tenantTablesSql yield the whole checklist', async (t) => {
  for (const table of TENANT_TABLES) {
    t.test(table, async (t) => {
      const { rows: [rel] } = await db.admin.query(
        `SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) AS owner
           FROM pg_class c WHERE c.oid = $1::regclass`, [table])
      t.same(rel, { relrowsecurity: true, relforcerowsecurity: true, owner: db.ownerRole }, 'RLS enabled and forced; owned by the owner role')

      const { rows: column } = await db.admin.query(
        `SELECT format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull
           FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attname = 'tenant_id'`, [table])
      t.same(column, [{ type: 'uuid', attnotnull: true }], 'tenant_id uuid not null')

      const { rows: tenantFk } = await db.admin.query(
        `SELECT c.confdeltype FROM pg_constraint c
           WHERE c.conrelid = $1::regclass AND c.contype = 'f' AND c.confrelid = 'tenants'::regclass
             AND c.conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'tenant_id')]`, [table])
      t.same(tenantFk, [{ confdeltype: 'c' }], 'tenant_id references tenants ON DELETE CASCADE')

      const { rows: leading } = await db.admin.query(
        `SELECT count(*)::int AS count FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
           WHERE i.indrelid = $1::regclass AND a.attname = 'tenant_id'`, [table])
      t.ok((leading[0]?.count ?? 0) >= 1, 'an index leads with tenant_id')

      const { rows: uniques } = await db.admin.query(
        `SELECT i.indexrelid::regclass::text AS name,
                'tenant_id' = ANY (SELECT attname FROM pg_attribute WHERE attrelid = i.indrelid AND attnum = ANY (i.indkey)) AS scoped
           FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique`, [table])
      t.ok(uniques.length > 0 && uniques.every((index) => index.scoped), 'every unique index includes tenant_id')

      const { rows: policies } = await db.admin.query(
        `SELECT p.polcmd, p.polpermissive, pg_get_expr(p.polqual, p.polrelid) AS using, pg_get_expr(p.polwithcheck, p.polrelid) AS check
           FROM pg_policy p WHERE p.polrelid = $1::regclass`, [table])
      t.equal(policies.length, 1, 'one policy')
      const [policy] = policies
      t.equal(policy.polcmd, '*', 'for all commands')
      t.equal(policy.polpermissive, true)
      for (const expression of [policy.using, policy.check]) {
        t.match(expression, /^\(tenant_id = \( SELECT \(NULLIF\(current_setting\('app\.current_tenant_id'::text, true\), ''::text\)\)::uuid/,
          'USING and WITH CHECK compare tenant_id with the setting, read once per statement')
      }

      const privileges = ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']
      const { rows: [granted] } = await db.admin.query(
        `SELECT ${privileges.map((privilege, i) => `has_table_privilege($1, $2::regclass, '${privilege}') AS p${i}`).join(', ')}`, [db.appRole, table])
      t.same(Object.values(granted), [true, true, true, true, false, false, false], 'the app role gets SELECT, INSERT, UPDATE, DELETE only')
    })
  }
  const { rows: [schemaRights] } = await db.admin.query("SELECT has_schema_privilege($1, 'public', 'CREATE') AS can_create", [db.appRole])
  t.equal(schemaRights.can_create, false, 'the app role cannot create objects')

  const { rows: childFk } = await db.admin.query(
    `SELECT array(SELECT attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.n ORDER BY o)::text[] AS columns,
            array(SELECT attname FROM unnest(c.confkey) WITH ORDINALITY k(n, o) JOIN pg_attribute ON attrelid = c.confrelid AND attnum = k.n ORDER BY o)::text[] AS refs
       FROM pg_constraint c WHERE c.conrelid = 'children'::regclass AND c.confrelid = 'parents'::regclass`)
  t.same(childFk, [{ columns: ['tenant_id', 'parent_id'], refs: ['tenant_id', 'id'] }], 'children reference parents by (tenant_id, id)')
})

t.test('rows belong to the transaction tenant', async (t) => {
  const parentId = await withTenant(pool, tenantA, async (tx) => {
    // No tenantId given: the column default reads the transaction's tenant.
    const [row] = await tx.insert(parents).values({ code: 'a-1' }).returning()
    return row?.id
  })
  const { rows } = await db.admin.query('SELECT tenant_id FROM parents WHERE id = $1', [parentId])
  t.same(rows, [{ tenant_id: tenantA }])
  t.same(await withTenant(pool, tenantB, (tx) => tx.select().from(parents)), [], 'another tenant sees nothing')
  t.equal(await failureOf(withTenant(pool, tenantA, (tx) => tx.insert(parents).values({ tenantId: tenantB, code: 'forged' }))), '42501', 'WITH CHECK refuses a row for another tenant')
  // Outside a tenant transaction the setting is unset: NULL, nothing visible, nothing insertable.
  const { rows: outside } = await pool.query('SELECT count(*)::int AS count FROM parents')
  t.same(outside, [{ count: 0 }])
  await t.rejects(pool.query("INSERT INTO parents (code) VALUES ('no-tenant')"), { code: '42501' }, 'no tenant: tenant_id is NULL, which the policy refuses')
  await t.rejects(pool.query('TRUNCATE parents CASCADE'), { code: '42501' }, 'the app role cannot TRUNCATE (which ignores RLS)')
  await db.assertNoLeaks(t, pool)
})

t.test('a plain foreign key lets a row point at another tenant; the composite one refuses', async (t) => {
  // The naive shape: RLS forced exactly the same, but a global key on id and a plain reference to it.
  const TENANT = "nullif(current_setting('app.current_tenant_id', true), '')::uuid"
  const POLICY = `tenant_id = (SELECT ${TENANT})`
  await db.asOwner(`
    CREATE TABLE naive_parents (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL DEFAULT ${TENANT}, code text NOT NULL UNIQUE);
    CREATE TABLE naive_children (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL DEFAULT ${TENANT}, parent_id uuid NOT NULL REFERENCES naive_parents (id));
    ALTER TABLE naive_parents ENABLE ROW LEVEL SECURITY;
    ALTER TABLE naive_parents FORCE ROW LEVEL SECURITY;
    ALTER TABLE naive_children ENABLE ROW LEVEL SECURITY;
    ALTER TABLE naive_children FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON naive_parents USING (${POLICY}) WITH CHECK (${POLICY});
    CREATE POLICY tenant_isolation ON naive_children USING (${POLICY}) WITH CHECK (${POLICY});
    GRANT SELECT, INSERT, UPDATE, DELETE ON naive_parents, naive_children TO ${db.appRole};
  `)
  const naiveB = await withTenant(pool, tenantB, async (tx) => (await tx.execute<{ id: string }>(sql`INSERT INTO naive_parents (code) VALUES ('b') RETURNING id`)).rows[0]?.id)
  await withTenant(pool, tenantA, (tx) => tx.execute(sql`INSERT INTO naive_children (parent_id) VALUES (${naiveB})`))
  const { rows: crossed } = await db.admin.query('SELECT c.tenant_id AS child, p.tenant_id AS parent FROM naive_children c JOIN naive_parents p ON p.id = c.parent_id')
  t.same(crossed, [{ child: tenantA, parent: tenantB }], 'plain FK: tenant A\'s row points at tenant B\'s row (FK checks ignore RLS)')

  const parentB = await withTenant(pool, tenantB, async (tx) => (await tx.insert(parents).values({ code: 'b-1' }).returning())[0]?.id)
  t.ok(parentB)
  t.equal(await failureOf(withTenant(pool, tenantA, (tx) => tx.insert(children).values({ parentId: parentB as string }))), '23503', 'composite FK: refused as if the parent did not exist')
  const { rows: none } = await db.admin.query('SELECT count(*)::int AS count FROM children')
  t.same(none, [{ count: 0 }])
  await db.assertNoLeaks(t, pool)
})

t.test('a global unique key tells a tenant what another has; a tenant-scoped one does not', async (t) => {
  await withTenant(pool, tenantB, (tx) => tx.execute(sql`INSERT INTO naive_parents (code) VALUES ('secret-plan')`))
  t.equal(await failureOf(withTenant(pool, tenantA, (tx) => tx.execute(sql`INSERT INTO naive_parents (code) VALUES ('secret-plan')`))), '23505', 'global unique: tenant A learns that someone has "secret-plan"')

  await withTenant(pool, tenantB, (tx) => tx.insert(parents).values({ code: 'secret-plan' }))
  await withTenant(pool, tenantA, (tx) => tx.insert(parents).values({ code: 'secret-plan' }))
  const { rows } = await db.admin.query("SELECT count(*)::int AS count FROM parents WHERE code = 'secret-plan'")
  t.same(rows, [{ count: 2 }], 'tenant-scoped unique: both tenants have their own "secret-plan"')
  t.equal(await failureOf(withTenant(pool, tenantA, (tx) => tx.insert(parents).values({ code: 'secret-plan' }))), '23505', 'still unique within one tenant')
  await db.assertNoLeaks(t, pool)
})

t.test('deleting a tenant deletes its rows', async (t) => {
  const tenantC = randomUUID()
  await db.admin.query('INSERT INTO tenants (id) VALUES ($1)', [tenantC])
  await withTenant(pool, tenantC, async (tx) => {
    const [parent] = await tx.insert(parents).values({ code: 'c' }).returning()
    await tx.insert(children).values({ parentId: parent?.id as string })
  })
  await db.admin.query('DELETE FROM tenants WHERE id = $1', [tenantC])
  const { rows } = await db.admin.query('SELECT (SELECT count(*) FROM parents WHERE tenant_id = $1)::int + (SELECT count(*) FROM children WHERE tenant_id = $1)::int AS count', [tenantC])
  t.same(rows, [{ count: 0 }])
})

t.test('the helpers refuse what would break isolation, when the schema is declared', async (t) => {
  t.throws(() => tenantTable('bad_key', { id: uuid('id').notNull().primaryKey() }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /primary key is \(tenant_id, id\)/ })
  t.throws(() => tenantTable('bad_unique', { id: uuid('id').notNull(), email: text('email').unique() }), { message: /tenantUnique\(t\.email\)/ })
  t.throws(() => createTenantTable({ tenants: tenants.id, setting: "x'; drop table tenants; --" }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
  t.throws(() => createTenantTable({ tenants: 'tenants.id' as never }), { message: /tenants table's key column/ })
  t.throws(() => tenantTablesSql(schema, { role: 'app; drop role x' }), { message: /plain lower-case role name/ })
  t.throws(() => tenantTablesSql({ tenants }, { role: 'app' }), { message: /no table declared with tenantTable/ })
  const plainParent = pgTable('plain', { id: uuid('id').primaryKey() })
  t.throws(() => tenantForeignKey(children.parentId, plainParent as never), { message: /not a tenant table/ })
})

t.test('the setting name is the plugin\'s default and can be changed', async (t) => {
  const custom = createTenantTable({ tenants: tenants.id, setting: 'myapp.org_id' })('things', { id: uuid('id').notNull() })
  const statements = (await generatedSql({ tenants, things: custom })).join('\n')
  t.match(statements, /USING \("tenant_id" = \(select nullif\(current_setting\('myapp\.org_id', true\), ''\)::uuid\)\)/)
  t.match(statements, /WITH CHECK \("tenant_id" = \(select nullif\(current_setting\('myapp\.org_id', true\), ''\)::uuid\)\)/)
  t.match(statements, /"tenant_id" uuid DEFAULT nullif\(current_setting\('myapp\.org_id', true\), ''\)::uuid NOT NULL/)
  t.notMatch(statements, /app\.current_tenant_id/)
})

// Compile-time checks, run by `tsc -p tsconfig.test.json`; the function is never called.
function typeChecks (): unknown[] {
  type Insert = typeof parents.$inferInsert
  type Select = typeof parents.$inferSelect
  const insert: Insert = { code: 'tenant_id is optional: its default reads the setting' }
  const select: Select = { tenantId: 'uuid', id: 'uuid', code: 'text' }
  // @ts-expect-error a tenant table's id must be declared .notNull(): it is half of the primary key
  tenantTable('loose_id', { id: uuid('id') })
  // @ts-expect-error a tenant table needs an id: children reference (tenant_id, id)
  tenantTable('no_id', { code: text('code') })
  return [insert, select]
}

t.test('types: tenantTable keeps drizzle\'s column types and asks for a not-null id', async (t) => {
  t.type(typeChecks, 'function', 'checked by tsc: see the @ts-expect-error lines')
})
