// The plugin's startup audit (option startupAudit): at ready, the audit's error-level table and key
// rules on the tables the registered schema declares with tenantTable. 'warn' logs each finding
// once with its rule id, 'error' refuses to start, 'off' does nothing; a clean schema logs nothing.
import { pgTable, text, uuid } from 'drizzle-orm/pg-core'
import Fastify from 'fastify'
import t from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import { createTenantTable, tenantUnique } from 'fastify-tenant-rls/schema'
import { createTestDatabase } from '../helpers/database.js'
import { baselineSql } from '../helpers/audit-world.js'

const tenants = pgTable('tenants', { id: uuid('id').primaryKey() })
const tenantTable = createTenantTable({ tenants: tenants.id })
const items = tenantTable('items', { id: uuid('id').notNull().defaultRandom(), name: text('name').notNull() }, (t) => [tenantUnique(t.name)])
const schema = { tenants, items }

const db = await createTestDatabase(t)
const pool = db.appPool()
await db.asOwner(baselineSql('public', db.appRole))

interface LogLine { level: number, msg: string, rule?: string }

/** Registers the plugin with `startupAudit` and readies the app; returns its warnings. */
async function ready (startupAudit?: unknown): Promise<LogLine[]> {
  const lines: LogLine[] = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { lines.push(JSON.parse(line) as LogLine) } } } })
  t.teardown(() => app.close())
  await app.register(fastifyTenantRls, { pool, schema, verify: async () => ({}), ...(startupAudit === undefined ? {} : { startupAudit: startupAudit as 'warn' }) })
  await app.ready()
  return lines.filter((line) => line.level === 40)
}

t.test('a clean schema logs nothing', async (t) => {
  t.same(await ready(), [])
  t.same(await ready('error'), [])
})

t.test('a broken declared table: warned once by default, refused with error, ignored with off', async (t) => {
  await db.asOwner('ALTER TABLE items NO FORCE ROW LEVEL SECURITY')
  t.teardown(() => db.asOwner('ALTER TABLE items FORCE ROW LEVEL SECURITY'))
  const warnings = await ready()
  t.same(warnings.map((line) => line.rule), ['tables.rls-not-forced'])
  t.match(warnings[0]?.msg, /^fastify-tenant-rls: tables\.rls-not-forced items: /)
  await t.rejects(ready('error'), { code: 'FST_TENANT_RLS_UNSAFE_SCHEMA', message: /tables\.rls-not-forced items.*FORCE ROW LEVEL SECURITY/ })
  t.same(await ready('off'), [])
})

t.test('only error-level rules run at startup, and only on tables declared with tenantTable', async (t) => {
  // A warning (keys.tenants-fk-no-cascade) on the declared table, and a hand-written table beside it.
  await db.asOwner(`ALTER TABLE items DROP CONSTRAINT items_tenant_id_fkey, ADD CONSTRAINT items_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id);
    CREATE TABLE notes (tenant_id uuid, body text); GRANT SELECT ON notes TO ${db.appRole}`)
  t.teardown(() => db.asOwner('DROP TABLE notes; ALTER TABLE items DROP CONSTRAINT items_tenant_id_fkey, ADD CONSTRAINT items_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE'))
  t.same(await ready('error'), [], 'the CLI audit reports both; the startup audit neither')
})

t.test('a wrong value is refused at register', async (t) => {
  await t.rejects(ready('loud'), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /startupAudit must be 'error', 'warn' or 'off'/ })
})

t.test('ready with 200 declared tenant tables (the policy-setting check once failed there on pg_toast)', async (t) => {
  const many: Record<string, unknown> = { tenants }
  const statements: string[] = []
  for (let i = 0; i < 200; i++) {
    many[`t${i}`] = tenantTable(`t${i}`, { id: uuid('id').notNull(), label: text('label').notNull() })
    statements.push(`CREATE TABLE t${i} (tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, id uuid NOT NULL, label text NOT NULL, PRIMARY KEY (tenant_id, id));
      ALTER TABLE t${i} ENABLE ROW LEVEL SECURITY; ALTER TABLE t${i} FORCE ROW LEVEL SECURITY;
      CREATE POLICY tenant_isolation ON t${i} USING (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid)) WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid));
      GRANT SELECT, INSERT, UPDATE, DELETE ON t${i} TO ${db.appRole}`)
  }
  await db.asOwner(statements.join(';\n'))
  await db.asOwner('ALTER TABLE t7 NO FORCE ROW LEVEL SECURITY')
  const lines: LogLine[] = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { lines.push(JSON.parse(line) as LogLine) } } } })
  t.teardown(() => app.close())
  await app.register(fastifyTenantRls, { pool, schema: many, verify: async () => ({}) })
  await app.ready()
  t.same(lines.map((line) => `${line.rule} ${line.msg.split(': ')[1]}`), ['tables.rls-not-forced tables.rls-not-forced t7'], 'one finding among 200 tables')
})
