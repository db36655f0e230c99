// The elevated DDL helpers refuse names they could not write into SQL safely, before writing any.
// (What the SQL they write does is proved by every other test in this folder, which runs it.)
import t from 'tap'
import { admissionColumnSql, auditTrailSql, grantsTableSql, systemRoleSql } from 'fastify-tenant-rls/elevated'
import { systemSchema } from '../helpers/elevated.js'

t.test('role, schema and table names must be plain lower-case identifiers', async (t) => {
  const refused = { code: 'FST_TENANT_RLS_INVALID_OPTION' }
  t.throws(() => systemRoleSql(systemSchema, { role: 'App"; DROP ROLE x; --' }), { ...refused, message: /systemRoleSql: role must be a plain lower-case name/ })
  t.throws(() => systemRoleSql(systemSchema, { role: 'app_system', schemas: ['Public'] }), { ...refused, message: /schemas must be a plain lower-case name/ })
  t.throws(() => systemRoleSql({}, { role: 'app_system' }), { ...refused, message: /no drizzle table/ })
  t.throws(() => auditTrailSql({ systemRole: 'app system' }), { ...refused, message: /systemRole/ })
  t.throws(() => auditTrailSql({ systemRole: 'app_system', auditTable: 'tenant_rls_audit' }), { ...refused, message: /schema-qualified/ })
  t.throws(() => grantsTableSql({ appRole: 'app', systemRole: 'app_system', grantsTable: 'public.grants;' }), { ...refused, message: /schema-qualified/ })
  t.throws(() => grantsTableSql({ appRole: 'app', systemRole: 'app_system', setting: 'tenant' }), { ...refused, message: /setting must be a custom PostgreSQL setting/ })
  t.throws(() => grantsTableSql({ appRole: undefined as never, systemRole: 'app_system' }), { ...refused, message: /appRole/ })
  t.throws(() => admissionColumnSql(0), RangeError)
  t.throws(() => admissionColumnSql(3, { grantsTable: 'x' }), { ...refused })
})

t.test('names given are written qualified and quoted', async (t) => {
  t.match(auditTrailSql({ systemRole: 'app_system', auditTable: 'ops.audit' }), /CREATE TABLE "ops"\."audit" \(/)
  t.match(grantsTableSql({ appRole: 'app', systemRole: 'app_system', grantsTable: 'ops.grants', setting: 'acme.tenant' }), /current_setting\('acme\.tenant', true\)/)
  t.match(admissionColumnSql(5, { grantsTable: 'ops.grants' }), /FROM "ops"\."grants" g[\s\S]*\$5::text[\s\S]*\$6::text/)
})

t.test('in signed mode the grants\' read policy takes the tenant from the signed function, never the setting', async (t) => {
  const signed = grantsTableSql({ appRole: 'app', systemRole: 'app_system', signedContext: true })
  t.match(signed, /CREATE POLICY "tenant_rls_grants_tenant_read" [^;]* USING \(tenant_id = \(SELECT tenant_rls\.current_tenant\(\)\)\);/)
  t.notMatch(signed, /current_setting/)
})
