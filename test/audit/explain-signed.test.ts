// explainUnderTenant and the explain command on tables whose policies verify a signed tenant
// context (createSignedWorld: the same rows under the signed policy and under the plain one). With
// the plugin's keys the plan is the tenant's, through the app role's pool or a connection that
// switches to the app role; a key the database does not hold, or a verifier the role may not call,
// is an error before the statement runs; without the keys a plan that read a signed table (itself,
// or a partition of one) is refused instead of shown with no rows, and a plan over plain tables,
// look-alike verifiers or signed policies for other roles is not. The verifier called per row is flagged.
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { explainUnderTenant } from 'fastify-tenant-rls/audit'
import type { ExplainOptions, ExplainReport } from 'fastify-tenant-rls/audit'
import { runCli } from '../../dist/cli/run-cli.js'
import { SIGNING_KEY_ENV } from '../../dist/cli/signing-options.js'
import { captureIo } from '../helpers/cli-io.js'
import { createSignedWorld, newKey, NOTES_PER_TENANT } from '../helpers/signed-context.js'

// Ten tenants: the tenant's rows are a tenth of each table, so a plan that ignored the policy shows it.
const world = await createSignedWorld(t, { fillers: 8 })
const { db } = world
const pool = db.appPool()
await db.asOwner(`
  -- A partitioned table under the signed policy: the plan names the partitions, the policy is the parent's.
  CREATE TABLE signed_parts (tenant_id uuid NOT NULL REFERENCES tenants (id), id int NOT NULL, PRIMARY KEY (tenant_id, id)) PARTITION BY HASH (tenant_id);
  CREATE TABLE signed_parts_0 PARTITION OF signed_parts FOR VALUES WITH (MODULUS 2, REMAINDER 0);
  CREATE TABLE signed_parts_1 PARTITION OF signed_parts FOR VALUES WITH (MODULUS 2, REMAINDER 1);
  ALTER TABLE signed_parts ENABLE ROW LEVEL SECURITY; ALTER TABLE signed_parts FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON signed_parts USING (tenant_id = (select tenant_rls.current_tenant()::uuid)) WITH CHECK (tenant_id = (select tenant_rls.current_tenant()::uuid));
  -- A plain policy for the app role, and a signed one for another role only, which does not apply to the app role.
  CREATE TABLE other_role_notes (tenant_id uuid NOT NULL REFERENCES tenants (id), id int NOT NULL, PRIMARY KEY (tenant_id, id));
  ALTER TABLE other_role_notes ENABLE ROW LEVEL SECURITY; ALTER TABLE other_role_notes FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON other_role_notes USING (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid));
  CREATE POLICY signed_for_owner ON other_role_notes TO ${db.ownerRole} USING (tenant_id = (select tenant_rls.current_tenant()::uuid));
  -- The signed policy on a table whose row security is off: the policy does nothing.
  CREATE TABLE unenforced_notes (tenant_id uuid NOT NULL REFERENCES tenants (id), id int NOT NULL, PRIMARY KEY (tenant_id, id));
  CREATE POLICY tenant_isolation ON unenforced_notes USING (tenant_id = (select tenant_rls.current_tenant()::uuid));
  -- A look-alike current_tenant() in another schema, which verifies nothing: not the signed mode.
  CREATE FUNCTION public.current_tenant() RETURNS text LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('app.current_tenant_id', true), '') $$;
  CREATE TABLE lookalike_notes (tenant_id uuid NOT NULL REFERENCES tenants (id), id int NOT NULL, PRIMARY KEY (tenant_id, id));
  ALTER TABLE lookalike_notes ENABLE ROW LEVEL SECURITY; ALTER TABLE lookalike_notes FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON lookalike_notes USING (tenant_id = (select public.current_tenant()::uuid));
  -- The signed function without (select …), and no index: verified per row, in the scan's filter.
  CREATE TABLE per_row_notes (tenant_id uuid NOT NULL REFERENCES tenants (id), id int NOT NULL);
  ALTER TABLE per_row_notes ENABLE ROW LEVEL SECURITY; ALTER TABLE per_row_notes FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON per_row_notes USING (tenant_id = tenant_rls.current_tenant()::uuid);
  GRANT SELECT ON signed_parts, other_role_notes, unenforced_notes, lookalike_notes, per_row_notes TO ${db.appRole};
`)
// An overload in the verifier's own schema that verifies nothing (created by the superuser, as a
// careless migration would): only current_tenant() without arguments is the signed mode's function.
await db.admin.query(`
  CREATE FUNCTION tenant_rls.current_tenant(fallback text) RETURNS text LANGUAGE sql STABLE AS $$ SELECT coalesce(nullif(current_setting('app.current_tenant_id', true), ''), fallback) $$;
  GRANT EXECUTE ON FUNCTION tenant_rls.current_tenant(text) TO ${db.appRole};
  CREATE TABLE overload_notes (tenant_id uuid NOT NULL REFERENCES tenants (id), id int NOT NULL, PRIMARY KEY (tenant_id, id));
  ALTER TABLE overload_notes ENABLE ROW LEVEL SECURITY; ALTER TABLE overload_notes FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON overload_notes USING (tenant_id = (select tenant_rls.current_tenant(NULL)::uuid));
  GRANT SELECT ON overload_notes TO ${db.appRole};
`)
for (const table of ['signed_parts', 'other_role_notes', 'unenforced_notes', 'lookalike_notes', 'per_row_notes', 'overload_notes']) {
  await db.admin.query(`INSERT INTO ${table} (tenant_id, id) SELECT tenant, n FROM unnest($1::uuid[]) AS tenant, generate_series(1, ${NOTES_PER_TENANT}) AS n`, [world.tenants])
}
t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })

const signedContext = { keys: [world.key] }
// The command line takes the secret as text, as newKey makes it.
const secret = world.key.secret
if (typeof secret !== 'string') throw new Error('the world\'s key has a text secret')
const explain = (sql: string, options: Partial<ExplainOptions> = {}): Promise<ExplainReport> =>
  explainUnderTenant(pool, { appRole: db.appRole, tenant: world.a, sql, ...options })
const rowsOf = (report: ExplainReport): number | undefined => (report.json as Array<{ Plan: { 'Actual Rows': number } }>)[0]?.Plan['Actual Rows']

t.test('signed: the plan is the tenant\'s, through the app role\'s pool and through a connection that becomes the app role', async (t) => {
  t.equal(world.tenants.length * NOTES_PER_TENANT, 1000, 'a thousand rows in each table')
  t.equal(rowsOf(await explain('SELECT * FROM signed_notes', { signedContext })), NOTES_PER_TENANT)
  t.equal(rowsOf(await explain('SELECT * FROM signed_parts', { signedContext })), NOTES_PER_TENANT, 'a partitioned table under the signed policy')
  // The superuser's connection switches with SET LOCAL ROLE: the probe and the plan are the app role's.
  const client = await db.admin.connect()
  t.teardown(() => client.release())
  t.equal(rowsOf(await explainUnderTenant(client, { appRole: db.appRole, tenant: world.b, sql: 'SELECT * FROM signed_notes', signedContext })), NOTES_PER_TENANT)
  // Tables under the plain policy read the same setting, which signed mode sets too.
  t.equal(rowsOf(await explain('SELECT * FROM plain_notes', { signedContext })), NOTES_PER_TENANT)
})

t.test('signed: the signature verified for every row of a filter is flagged, with the select form as the fix', async (t) => {
  const report = await explain('SELECT * FROM per_row_notes', { signedContext })
  t.equal(rowsOf(report), NOTES_PER_TENANT)
  const perRow = report.findings.filter((entry) => entry.rule === 'explain.policy-per-row')
  t.equal(perRow.length, 1, report.plan)
  t.equal(perRow[0]?.message, 'current_tenant() is called for every row of the filter')
  t.match(perRow[0]?.fix, 'write the policy\'s tenant as (select tenant_rls.current_tenant()::uuid)')
  t.notOk((await explain('SELECT * FROM signed_notes', { signedContext })).findings.some((entry) => entry.rule === 'explain.policy-per-row'), 'the select form is an InitPlan')
})

t.test('signed: a key the database does not hold is refused before the statement runs', async (t) => {
  const unknown = { keys: [newKey('unknown')] }
  await t.rejects(explain('SELECT * FROM signed_notes', { signedContext: unknown }), {
    code: 'FST_TENANT_RLS_SIGNED_CONTEXT_REJECTED',
    message: /did not accept the signature made with the key "unknown": the key is not installed/
  })
  // Nothing ran: a write the statement would make is not even attempted (the policy would refuse it).
  await t.rejects(explain('INSERT INTO signed_notes (tenant_id, id, body) VALUES ($1, 999, \'x\')', { signedContext: unknown, params: [world.a] }), { code: 'FST_TENANT_RLS_SIGNED_CONTEXT_REJECTED' })
})

t.test('signed: a verifier the app role may not call is refused with the reason', async (t) => {
  await db.admin.query(`REVOKE EXECUTE ON FUNCTION tenant_rls.current_tenant() FROM ${db.appRole}`)
  t.teardown(() => db.admin.query(`GRANT EXECUTE ON FUNCTION tenant_rls.current_tenant() TO ${db.appRole}`))
  await t.rejects(explain('SELECT * FROM plain_notes', { signedContext }), {
    code: 'FST_TENANT_RLS_SIGNED_CONTEXT_REJECTED',
    message: /tenant_rls\.current_tenant\(\) failed \(permission denied for function current_tenant\)/
  })
})

t.test('signed: a connection that knows no backend pid to sign for is refused with its code', async (t) => {
  const client = await pool.connect()
  // What pg keeps from BackendKeyData; a connection without it cannot be signed for.
  const connection = client as unknown as { processID: number | undefined }
  const pid = connection.processID
  connection.processID = undefined
  t.teardown(() => { connection.processID = pid; client.release() })
  await t.rejects(explainUnderTenant(client, { appRole: db.appRole, tenant: world.a, sql: 'SELECT * FROM signed_notes', signedContext }), { code: 'FST_TENANT_RLS_SIGNED_CONTEXT_UNAVAILABLE' })
})

t.test('a bad signedContext is refused before any connection', async (t) => {
  const fresh = db.appPool()
  await t.rejects(explainUnderTenant(fresh, { appRole: db.appRole, tenant: world.a, sql: 'SELECT 1', signedContext: { keys: [{ id: 'k1', secret: 'short' }] } }),
    { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /5-byte secret/ })
  t.equal(fresh.totalCount, 0, 'no connection was taken')
})

t.test('unsigned: a statement on a signed table is refused from its plan, before it runs', async (t) => {
  await db.asOwner(`CREATE SEQUENCE explain_probe_seq; GRANT USAGE ON SEQUENCE explain_probe_seq TO ${db.appRole}`)
  t.teardown(() => db.asOwner('DROP SEQUENCE explain_probe_seq'))
  // Run, the INSERT would fail inside EXPLAIN ANALYZE on the policy's WITH CHECK (42501), after
  // taking a sequence value that no rollback returns.
  await t.rejects(explain("INSERT INTO signed_notes (tenant_id, id, body) VALUES ($1, nextval('explain_probe_seq'), 'probe')", { params: [world.a] }),
    { code: 'FST_TENANT_RLS_SIGNED_CONTEXT_REQUIRED', message: /^The policies of public\.signed_notes read/ })
  const { rows: [sequence] } = await db.admin.query<{ called: boolean }>('SELECT is_called AS called FROM explain_probe_seq')
  t.equal(sequence?.called, false, 'the statement never ran: no sequence value was taken')
})

t.test('unsigned: a plan that reads a signed table is refused, naming it; plain tables are explained', async (t) => {
  await t.rejects(explain('SELECT * FROM signed_notes'), { code: 'FST_TENANT_RLS_SIGNED_CONTEXT_REQUIRED', message: /^The policies of public\.signed_notes read the tenant through tenant_rls\.current_tenant\(\)/ })
  await t.rejects(explain('SELECT count(*) FROM plain_notes p JOIN signed_notes s USING (tenant_id, id)'), { message: /^The policies of public\.signed_notes read/ }, 'only the signed table of a join is named')
  await t.rejects(explain('SELECT * FROM signed_parts'), { code: 'FST_TENANT_RLS_SIGNED_CONTEXT_REQUIRED', message: /public\.signed_parts_0, public\.signed_parts_1/ }, 'the partitions, under the parent\'s policy')
  t.equal(rowsOf(await explain('SELECT * FROM plain_notes')), NOTES_PER_TENANT)
  t.equal(rowsOf(await explain('SELECT * FROM other_role_notes')), NOTES_PER_TENANT, 'a signed policy for another role is not the app role\'s')
  t.equal(rowsOf(await explain('SELECT * FROM unenforced_notes')), world.tenants.length * NOTES_PER_TENANT, 'a signed policy on a table without row security does nothing')
  t.equal(rowsOf(await explain('SELECT * FROM lookalike_notes')), NOTES_PER_TENANT, 'a look-alike current_tenant() in another schema is no signed policy')
  t.equal(rowsOf(await explain('SELECT * FROM overload_notes')), NOTES_PER_TENANT, 'nor is an overload with an argument in its schema')
})

t.test('the CLI signs with --signing-key-id and the secret from the environment, and refuses half of the pair', async (t) => {
  t.teardown(() => { delete process.env[SIGNING_KEY_ENV] })
  const args = (sql: string): string[] => ['explain', '--database-url', db.url(), '--app-role', db.appRole, '--tenant', world.a, '--format', 'json', sql]
  const run = async (argv: string[], envSecret?: string): Promise<{ code: number, out: string, err: string }> => {
    if (envSecret === undefined) delete process.env[SIGNING_KEY_ENV]
    else process.env[SIGNING_KEY_ENV] = envSecret
    const { io, out, err } = captureIo()
    const code = await runCli(argv, io)
    return { code, out: out(), err: err() }
  }
  const signed = await run([...args('SELECT * FROM signed_notes'), '--signing-key-id', world.key.id], secret)
  t.equal(signed.err, '')
  t.equal((JSON.parse(signed.out) as { plan: Array<{ Plan: { 'Actual Rows': number } }> }).plan[0]?.Plan['Actual Rows'], NOTES_PER_TENANT)

  const unsigned = await run(args('SELECT * FROM signed_notes'))
  t.equal(unsigned.code, 2, 'unsigned on a signed table: a usage error')
  t.match(unsigned.err, /The policies of public\.signed_notes read the tenant through tenant_rls\.current_tenant\(\).*: on the command line, --signing-key-id <id> with the key's secret in TENANT_RLS_SIGNING_KEY/)
  t.equal(unsigned.out, '', 'no plan printed')

  const noSecret = await run([...args('SELECT 1'), '--signing-key-id', world.key.id])
  t.equal(noSecret.code, 2)
  t.match(noSecret.err, `--signing-key-id ${world.key.id} needs the key's secret in ${SIGNING_KEY_ENV}`)
  const noId = await run(args('SELECT 1'), secret)
  t.equal(noId.code, 2)
  t.match(noId.err, `${SIGNING_KEY_ENV} is set: give --signing-key-id`)
  const short = await run([...args('SELECT 1'), '--signing-key-id', world.key.id], 'too short')
  t.equal(short.code, 2, 'a secret the plugin would refuse is a usage error')

  const rejected = await run([...args('SELECT * FROM signed_notes'), '--signing-key-id', 'unknown'], 'a secret of 48 bytes that the database never saw')
  t.equal(rejected.code, 3, 'a key the database does not hold: the command could not run')
  t.match(rejected.err, /did not accept the signature made with the key "unknown"/)
})

t.test('the built binary reads the secret from its environment', async (t) => {
  const bin = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url))
  const { stdout } = await promisify(execFile)(process.execPath, [bin, 'explain', '--database-url', db.url(), '--app-role', db.appRole, '--tenant', world.a,
    '--signing-key-id', world.key.id, '--format', 'json', 'SELECT * FROM signed_notes WHERE id = 7'], { env: { ...process.env, [SIGNING_KEY_ENV]: secret } })
  const [explained] = (JSON.parse(stdout) as { plan: Array<{ Plan: { 'Actual Rows': number } }> }).plan
  t.equal(explained?.Plan['Actual Rows'], 1, 'the tenant\'s one row with that id, of ten')
})
