// The audit on a database in signed mode (createSignedWorld: the same rows under the signed policy
// and under the plain one). Without --signed-context both forms isolate and pass; with it the plain
// policy, which route SQL can fool by writing the setting, is an error, and the signed one passes.
// A look-alike current_tenant() in another schema, or the signed source with an OR beside it, is
// no tenant source in either mode.
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import t from 'tap'
import fastifyTenantRls from 'fastify-tenant-rls'
import { auditDatabase } from 'fastify-tenant-rls/audit'
import type { AuditReport } from 'fastify-tenant-rls/audit'
import { runCli } from '../../dist/cli/run-cli.js'
import { JWT_SECRET } from '../helpers/fixture.js'
import { createSignedWorld, signedNotes } from '../helpers/signed-context.js'

const world = await createSignedWorld(t)
const { db } = world

/** The table rules' findings as `rule object`, sorted. */
function tableFindings (report: AuditReport): string[] {
  return report.findings.filter((entry) => entry.rule.startsWith('tables.')).map((entry) => `${entry.rule} ${entry.object}`).sort()
}

t.test('unsigned mode: the signed policy is an accepted tenant source, like the plain one', async (t) => {
  const report = await auditDatabase(db.admin, { appRole: db.appRole })
  t.same(report.tables, ['plain_notes', 'signed_notes'])
  t.same(tableFindings(report), [])
})

t.test('signed mode: the plain policy is an error, the signed one passes', async (t) => {
  const report = await auditDatabase(db.admin, { appRole: db.appRole, signedContext: true })
  t.same(tableFindings(report), ['tables.policy-unsigned policy tenant_isolation on plain_notes'])
  const [finding] = report.findings.filter((entry) => entry.rule === 'tables.policy-unsigned')
  t.equal(finding?.severity, 'error')
  t.match(finding?.fix, 'USING (tenant_id = (select tenant_rls.current_tenant()::uuid))', 'the fix is the signed form')
  t.notOk(report.ok)
})

t.test('the signed function without (select …) isolates but is a policy-form warning, with the select form as the fix', async (t) => {
  await inTransaction(async (client) => {
    await client.query('ALTER POLICY tenant_isolation ON signed_notes USING (tenant_id = tenant_rls.current_tenant()::uuid) WITH CHECK (tenant_id = tenant_rls.current_tenant()::uuid)')
    for (const signedContext of [false, true]) {
      const report = await auditDatabase(client, { appRole: db.appRole, signedContext })
      t.same(tableFindings(report).filter((line) => line.includes('signed_notes')), ['tables.policy-form policy tenant_isolation on signed_notes'], `signedContext ${signedContext}`)
      const [finding] = report.findings.filter((entry) => entry.rule === 'tables.policy-form')
      t.equal(finding?.severity, 'warning')
      t.match(finding?.message, 'calls tenant_rls.current_tenant() without (select …)')
      t.match(finding?.fix, 'USING (tenant_id = (select tenant_rls.current_tenant()::uuid)) WITH CHECK (tenant_id = (select tenant_rls.current_tenant()::uuid))')
    }
  })
})

t.test('signed mode: a policy beside the signed one that reads the setting is an error too', async (t) => {
  await inTransaction(async (client) => {
    await client.query('CREATE POLICY by_setting ON signed_notes FOR SELECT USING (tenant_id = (select nullif(current_setting(\'app.current_tenant_id\', true), \'\')::uuid))')
    const signed = await auditDatabase(client, { appRole: db.appRole, signedContext: true })
    t.same(tableFindings(signed).filter((line) => line.includes('signed_notes')), ['tables.policy-unsigned policy by_setting on signed_notes'])
    const unsigned = await auditDatabase(client, { appRole: db.appRole })
    t.same(tableFindings(unsigned), [], 'without the mode it isolates as well as any plain policy')
  })
})

t.test('a look-alike current_tenant() in another schema, or an OR beside the signed source, is no tenant source', async (t) => {
  await inTransaction(async (client) => {
    await client.query(`
      CREATE FUNCTION public.current_tenant() RETURNS text LANGUAGE sql STABLE AS $$ SELECT current_setting('app.current_tenant_id', true) $$;
      CREATE POLICY look_alike ON signed_notes FOR SELECT USING (tenant_id = (select public.current_tenant()::uuid));
      CREATE POLICY widened ON plain_notes FOR SELECT USING (tenant_id = (select tenant_rls.current_tenant()::uuid) OR body LIKE 'shared%')`)
    for (const signedContext of [false, true]) {
      const report = await auditDatabase(client, { appRole: db.appRole, signedContext })
      t.same(tableFindings(report).filter((line) => line.startsWith('tables.permissive-without-setting')), [
        'tables.permissive-without-setting policy look_alike on signed_notes',
        'tables.permissive-without-setting policy widened on plain_notes'
      ], `signedContext ${signedContext}`)
    }
  })
})

t.test('the CLI: --signed-context turns the plain policy into an error and exits 1', async (t) => {
  const rules = async (flags: string[]): Promise<{ code: number, rules: string[] }> => {
    let stdout = ''
    const code = await runCli(['audit', '--database-url', db.adminUrl, '--app-role', db.appRole, '--format', 'json', ...flags], {
      stdout: { write: (chunk: string) => { stdout += chunk } },
      stderr: { write: () => {} },
      stdoutIsTty: false,
      stderrIsTty: false
    })
    return { code, rules: tableFindings(JSON.parse(stdout) as AuditReport) }
  }
  t.same(await rules(['--signed-context']), { code: 1, rules: ['tables.policy-unsigned policy tenant_isolation on plain_notes'] })
  t.same((await rules([])).rules, [], 'without the flag: no table finding')
})

t.test('the startup audit of a signed plugin passes a table declared with signedContext: true', async (t) => {
  // The plain table out of the role's reach, so the signed mode's own startup check accepts the database.
  await db.admin.query(`REVOKE ALL ON plain_notes FROM ${db.appRole}`)
  t.teardown(() => db.admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON plain_notes TO ${db.appRole}`))
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  const pool = db.appPool()
  await app.register(fastifyTenantRls, { pool, schema: { signedNotes }, signedContext: { keys: [world.key] }, startupAudit: 'error' })
  await app.ready()
  t.pass('ready: no finding refused the start')
})

t.test('signedContext must be a boolean', async (t) => {
  await t.rejects(auditDatabase(db.admin, { appRole: db.appRole, signedContext: 'yes' as never }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /signedContext must be true or false/ })
})

// Runs `work` on one superuser connection in a transaction that is rolled back: the fixture's
// objects never outlive the test.
async function inTransaction (work: (client: import('pg').PoolClient) => Promise<void>): Promise<void> {
  const client = await db.admin.connect()
  try {
    await client.query('BEGIN')
    await work(client)
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
}
