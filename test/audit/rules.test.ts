// Every audit rule both ways: a fixture (its own schema and app role) that breaks exactly one thing
// and makes the rule fire, and the clean baseline, which fires nothing. Each firing fixture asserts
// the exact set of rule ids, so a rule that fires too widely fails here as well as one that misses.
import t from 'tap'
import { auditDatabase, missingRlsFixes } from 'fastify-tenant-rls/audit'
import { createAuditWorld, ruleIds, TENANT } from '../helpers/audit-world.js'

const world = await createAuditWorld(t)
const { db } = world

interface Case {
  name: string
  sql: string
  rules: string[]
  /** Run the fixture's SQL as the owner role (the default is the superuser, as a careless migration). */
  owner?: boolean
  options?: Record<string, unknown>
  /** The rules are a subset of what fires. */
  partial?: boolean
}

const CASES: Case[] = [
  { name: 'rls-disabled', owner: true, sql: 'ALTER TABLE %S.items DISABLE ROW LEVEL SECURITY', rules: ['tables.rls-disabled'] },
  { name: 'rls-not-forced', owner: true, sql: 'ALTER TABLE %S.items NO FORCE ROW LEVEL SECURITY', rules: ['tables.rls-not-forced'] },
  { name: 'no-policy', owner: true, sql: 'DROP POLICY tenant_isolation ON %S.items', rules: ['tables.no-policy'] },
  {
    name: 'command-uncovered',
    owner: true,
    sql: `DROP POLICY tenant_isolation ON %S.items; CREATE POLICY reads ON %S.items FOR SELECT USING (tenant_id = ${TENANT})`,
    rules: ['tables.command-uncovered']
  },
  {
    name: 'insert-without-check',
    owner: true,
    sql: `DROP POLICY tenant_isolation ON %S.items;
      CREATE POLICY reads ON %S.items FOR SELECT USING (tenant_id = ${TENANT});
      CREATE POLICY writes ON %S.items FOR INSERT;
      CREATE POLICY changes ON %S.items FOR UPDATE USING (tenant_id = ${TENANT}) WITH CHECK (tenant_id = ${TENANT});
      CREATE POLICY removes ON %S.items FOR DELETE USING (tenant_id = ${TENANT})`,
    // An INSERT policy without WITH CHECK has no expression at all: it also restricts nothing.
    rules: ['tables.permissive-without-setting', 'tables.policy-without-check']
  },
  {
    name: 'all-without-check',
    owner: true,
    sql: `DROP POLICY tenant_isolation ON %S.items; CREATE POLICY tenant_isolation ON %S.items USING (tenant_id = ${TENANT})`,
    rules: ['tables.policy-without-check']
  },
  { name: 'loose-permissive', owner: true, sql: 'CREATE POLICY everyone ON %S.items FOR SELECT USING (true)', rules: ['tables.permissive-without-setting'] },
  { name: 'or-beside-tenant', owner: true, sql: `CREATE POLICY shared ON %S.items FOR SELECT USING (tenant_id = ${TENANT} OR name LIKE 'shared-%')`, rules: ['tables.permissive-without-setting'] },
  {
    name: 'text-cast',
    owner: true,
    sql: `DROP POLICY tenant_isolation ON %S.items; CREATE POLICY tenant_isolation ON %S.items
      USING (tenant_id::text = (select nullif(current_setting('app.current_tenant_id', true), '')))
      WITH CHECK (tenant_id::text = (select nullif(current_setting('app.current_tenant_id', true), '')))`,
    rules: ['tables.policy-text-cast']
  },
  {
    name: 'bare-setting',
    owner: true,
    sql: `DROP POLICY tenant_isolation ON %S.items; CREATE POLICY tenant_isolation ON %S.items
      USING (tenant_id = current_setting('app.current_tenant_id')::uuid) WITH CHECK (tenant_id = current_setting('app.current_tenant_id')::uuid)`,
    rules: ['tables.policy-form']
  },
  { name: 'unregistered-global', owner: true, sql: 'CREATE TABLE %S.plans (name text PRIMARY KEY); GRANT SELECT ON %S.plans TO %R', rules: ['default-deny.unregistered-global'] },
  {
    name: 'text-tenant-column',
    owner: true,
    sql: `CREATE TABLE %S.notes (tenant_id text NOT NULL, id uuid NOT NULL, PRIMARY KEY (tenant_id, id));
      ALTER TABLE %S.notes ENABLE ROW LEVEL SECURITY; ALTER TABLE %S.notes FORCE ROW LEVEL SECURITY;
      CREATE POLICY tenant_isolation ON %S.notes USING (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), ''))) WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')))`,
    // A text column cannot reference the uuid tenants key either.
    rules: ['keys.no-tenants-fk', 'keys.tenant-column-type']
  },
  {
    name: 'nullable-tenant',
    owner: true,
    sql: `CREATE TABLE %S.notes (tenant_id uuid REFERENCES %S.tenants (id) ON DELETE CASCADE, id uuid NOT NULL);
      CREATE UNIQUE INDEX ON %S.notes (tenant_id, id);
      ALTER TABLE %S.notes ENABLE ROW LEVEL SECURITY; ALTER TABLE %S.notes FORCE ROW LEVEL SECURITY;
      CREATE POLICY tenant_isolation ON %S.notes USING (tenant_id = ${TENANT}) WITH CHECK (tenant_id = ${TENANT})`,
    rules: ['keys.tenant-column-nullable']
  },
  { name: 'no-tenants-fk', owner: true, sql: 'ALTER TABLE %S.items DROP CONSTRAINT items_tenant_id_fkey', rules: ['keys.no-tenants-fk'] },
  {
    name: 'fk-no-cascade',
    owner: true,
    sql: 'ALTER TABLE %S.items DROP CONSTRAINT items_tenant_id_fkey, ADD CONSTRAINT items_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES %S.tenants (id)',
    rules: ['keys.tenants-fk-no-cascade']
  },
  {
    name: 'fk-without-tenant',
    owner: true,
    sql: `ALTER TABLE %S.items ADD CONSTRAINT items_id_key UNIQUE (id);
      CREATE TABLE %S.parts (tenant_id uuid NOT NULL REFERENCES %S.tenants (id) ON DELETE CASCADE, id uuid NOT NULL, item_id uuid NOT NULL REFERENCES %S.items (id),
        PRIMARY KEY (tenant_id, id));
      ALTER TABLE %S.parts ENABLE ROW LEVEL SECURITY; ALTER TABLE %S.parts FORCE ROW LEVEL SECURITY;
      CREATE POLICY tenant_isolation ON %S.parts USING (tenant_id = ${TENANT}) WITH CHECK (tenant_id = ${TENANT})`,
    rules: ['keys.fk-without-tenant', 'keys.unique-without-tenant']
  },
  { name: 'unique-index', owner: true, sql: 'CREATE UNIQUE INDEX items_name_idx ON %S.items (name)', rules: ['keys.unique-without-tenant'] },
  {
    name: 'no-tenant-index',
    owner: true,
    sql: 'ALTER TABLE %S.items DROP CONSTRAINT items_pkey, DROP CONSTRAINT items_tenant_id_name_key, ADD PRIMARY KEY (id, tenant_id)',
    rules: ['keys.no-tenant-index']
  },
  { name: 'superuser-view', sql: 'CREATE VIEW %S.all_items AS SELECT * FROM %S.items; GRANT SELECT ON %S.all_items TO %R', rules: ['bypass.view'] },
  { name: 'nested-view', sql: 'CREATE VIEW %S.inner_items AS SELECT * FROM %S.items; CREATE VIEW %S.outer_items AS SELECT * FROM %S.inner_items; GRANT SELECT ON %S.outer_items TO %R', rules: ['bypass.view'] },
  { name: 'owner-view-unforced', owner: true, sql: 'ALTER TABLE %S.items NO FORCE ROW LEVEL SECURITY; CREATE VIEW %S.all_items AS SELECT * FROM %S.items; GRANT SELECT ON %S.all_items TO %R', rules: ['bypass.view', 'tables.rls-not-forced'] },
  { name: 'materialized-view', sql: 'CREATE MATERIALIZED VIEW %S.item_counts AS SELECT tenant_id, count(*) FROM %S.items GROUP BY 1; GRANT SELECT ON %S.item_counts TO %R', rules: ['bypass.materialized-view'] },
  { name: 'definer-function', sql: 'CREATE FUNCTION %S.count_items() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM %S.items $$', rules: ['bypass.security-definer-function'] },
  { name: 'serial-sequence', owner: true, sql: 'ALTER TABLE %S.items ADD COLUMN number bigserial; GRANT USAGE ON SEQUENCE %S.items_number_seq TO %R', rules: ['bypass.sequence-counts'] },
  { name: 'identity-sequence', owner: true, sql: 'ALTER TABLE %S.items ADD COLUMN number bigint GENERATED ALWAYS AS IDENTITY', rules: ['bypass.sequence-counts'] },
  { name: 'bypassrls', sql: 'ALTER ROLE %R BYPASSRLS', rules: ['role.bypassrls'] },
  // The owner role owns every fixture's schema: its members reach them all, so only part of the set is this fixture's.
  { name: 'owner-member', sql: 'GRANT %O TO %R', rules: ['role.create-schema', 'role.owns-tenant-table'], partial: true },
  { name: 'create-schema', sql: 'GRANT CREATE ON SCHEMA %S TO %R', rules: ['role.create-schema'] },
  { name: 'create-database', sql: 'GRANT CREATE ON DATABASE %D TO %R', rules: ['role.create-database'] },
  { name: 'temp', sql: 'GRANT TEMPORARY ON DATABASE %D TO %R', rules: ['role.temp'] }
]

t.test('the clean baseline passes every rule', async (t) => {
  const fixture = await world.fixture('clean')
  const report = await fixture.audit()
  t.same(report.findings, [], 'no finding')
  t.ok(report.ok)
  t.same(report.tables, [`${fixture.schema}.items`], 'the tenant table was audited (the tenants table has no tenant column)')
})

const database = new URL(db.adminUrl).pathname.slice(1)
for (const { name, sql, rules, owner, options, partial } of CASES) {
  t.test(`${rules.join(' + ')} fires on: ${name}`, async (t) => {
    const fixture = await world.fixture(name, sql.replaceAll('%D', database), { owner: owner === true })
    const report = await fixture.audit(options)
    const found = ruleIds(report)
    const described = report.findings.map((entry) => `${entry.rule} ${entry.object}: ${entry.message}`).join('\n')
    if (partial === true) t.same(found.filter((id) => rules.includes(id)), [...rules].sort(), described)
    else t.same(found, [...rules].sort(), described)
    t.equal(report.ok, !report.findings.some((entry) => entry.severity === 'error'))
    for (const entry of report.findings) t.ok(entry.fix.length > 0 && entry.why.length > 0, `${entry.rule} says why and how to fix`)
  })
}

t.test('a superuser app role fires role.superuser', async (t) => {
  const fixture = await world.fixture('superuser', 'ALTER ROLE %R SUPERUSER')
  t.ok(ruleIds(await fixture.audit()).includes('role.superuser'))
})

t.test('a member of a BYPASSRLS role fires role.member-of-bypassing', async (t) => {
  const bypassing = await world.role('bypassing', 'NOLOGIN BYPASSRLS')
  const fixture = await world.fixture('member-of-bypassing', `GRANT ${bypassing} TO %R`)
  t.same(ruleIds(await fixture.audit()), ['role.member-of-bypassing'])
})

t.test('a policy TO an inherited role that does not restrict to the tenant fires role.broader-policy', async (t) => {
  const support = await world.role('support')
  const fixture = await world.fixture('broader-policy', `GRANT ${support} TO %R; CREATE POLICY support ON %S.items FOR SELECT TO ${support} USING (true)`)
  t.same(ruleIds(await fixture.audit()), ['role.broader-policy'])
})

t.test('the registry of global tables silences default-deny for exactly the tables it names', async (t) => {
  const fixture = await world.fixture('registered-global', 'CREATE TABLE %S.plans (name text PRIMARY KEY); CREATE TABLE %S.regions (name text); GRANT SELECT ON %S.plans, %S.regions TO %R')
  t.same((await fixture.audit({ allowGlobal: ['plans', `${fixture.schema}.regions`] })).findings, [])
  t.same((await fixture.audit({ allowGlobal: ['plans'] })).findings.map((entry) => entry.object), [`${fixture.schema}.regions`])
})

t.test('the bypass objects are clean when they do not bypass', async (t) => {
  const fixture = await world.fixture('bypass-clean', `
    CREATE VIEW %S.all_items WITH (security_invoker = true) AS SELECT * FROM %S.items; GRANT SELECT ON %S.all_items TO %R;
    CREATE MATERIALIZED VIEW %S.item_counts AS SELECT tenant_id, count(*) FROM %S.items GROUP BY 1;
    CREATE FUNCTION %S.count_items() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM %S.items $$;
    REVOKE EXECUTE ON FUNCTION %S.count_items() FROM PUBLIC;
    CREATE FUNCTION %S.invoker_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM %S.items $$`)
  t.same((await fixture.audit()).findings, [])
})

t.test('a wrong --tenant-column finds no table and fails rather than pass', async (t) => {
  const fixture = await world.fixture('column-typo')
  const report = await fixture.audit({ tenantColumn: 'org_id' })
  // items has no org_id column: to the audit it is now a global table the app role reads.
  t.same(ruleIds(report), ['default-deny.unregistered-global', 'tables.none-found'])
  t.notOk(report.ok)
})

t.test('an unknown role or schema is refused, not audited as clean', async (t) => {
  await t.rejects(auditDatabase(db.admin, { appRole: 'no_such_role_here' }), { code: 'FST_TENANT_RLS_AUDIT_ROLE_NOT_FOUND' })
  await t.rejects(auditDatabase(db.admin, { appRole: db.appRole, schema: 'no_such_schema' }), { code: 'FST_TENANT_RLS_AUDIT_SCHEMA_NOT_FOUND' })
  await t.rejects(auditDatabase(db.admin, { appRole: db.appRole, setting: 'bad setting' }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
})

t.test('the app role itself can run the audit (catalog reads only)', async (t) => {
  const fixture = await world.fixture('self-audit')
  const pool = db.appPool()
  const report = await auditDatabase(pool, { appRole: db.appRole, schema: fixture.schema })
  // The file's app role has no grant on the fixture's table: only its own findings, none about access.
  t.same(report.tables, [`${fixture.schema}.items`])
})

t.test('server.rls-cve: minor versions without a fix are named, fixed ones are not', async (t) => {
  const ids = (versionNum: number): string[] => missingRlsFixes(versionNum).map(({ cve }) => cve.id)
  t.same(ids(170010), [], '17.10 has every fix')
  t.same(ids(170005), ['CVE-2025-8713'], '17.5 misses the August 2025 fix')
  t.same(ids(170000), ['CVE-2024-10976', 'CVE-2024-10978', 'CVE-2025-8713'])
  t.same(ids(150002), ['CVE-2023-2455', 'CVE-2024-10976', 'CVE-2024-10978', 'CVE-2025-8713'])
  t.same(missingRlsFixes(110022).map(({ fixedIn }) => fixedIn), [null, null, null], '11 reached end of life before the 2024 and 2025 fixes')
  t.same(ids(90501).length, 7, '9.5.1 misses every fix')
  t.same(ids(90400), [], '9.4 has no row-level security')
  const { rows: [row] } = await db.admin.query<{ version: string }>("SELECT current_setting('server_version_num') AS version")
  const live = await world.fixture('server-version')
  t.same(ruleIds(await live.audit()).filter((id) => id.startsWith('server.')), ids(Number(row?.version)).length > 0 ? ['server.rls-cve'] : [], 'the live server is judged by the same table')
})
