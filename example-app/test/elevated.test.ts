// The example's elevated paths end to end on a fresh database prepared by its own startup steps:
// the usage job sees every tenant through the system role and leaves its audit rows; a support
// operator is refused without a grant, reads Acme read-only under one (a write is refused and
// nothing is committed), and is refused again right after the revocation; a break-glass grant is
// warned about, listed as unreviewed, then reviewed; Acme's access report lists all of it and no
// other tenant's; the audit trail verifies clean at the end. Grants go through the admin script's runAdmin,
// and one test runs the script itself.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import { withTenant } from 'fastify-tenant-rls'
import type { Grant } from 'fastify-tenant-rls/elevated'
import pg from 'pg'
import t from 'tap'
import { createTestDatabase } from '../../test/helpers/database.js'
import { newKey } from '../../test/helpers/signed-context.js'
import { runAdmin } from '../src/admin.js'
import { buildApp } from '../src/app.js'
import { allowSystemLogin, DEMO, seedDemoData, setUpDatabase, SYSTEM_ROLE } from '../src/database.js'
import { asRole } from '../src/settings.js'
import * as schema from '../src/schema.js'
import { countUsage, USAGE_JOB } from '../src/usage-job.js'

const JWT_SECRET = 'example-app-test-secret-long-enough-for-hs256'
const SYSTEM_PASSWORD = 'example-system-test-password'
const ADMIN = fileURLToPath(new URL('../src/admin.ts', import.meta.url))
// The TypeScript loader tap runs this file with, so the child runs the same source.
const LOADER = process.execArgv.filter((arg) => arg.includes('typescript'))

const db = await createTestDatabase(t)
const pool = db.appPool()
const signedContext = { keys: [newKey('example-test')] }
await setUpDatabase(db.admin, { ownerRole: db.ownerRole, appRole: db.appRole }, signedContext)
await allowSystemLogin(db.admin, SYSTEM_PASSWORD)
await seedDemoData(db.admin, db.ownerRole, pool, signedContext)
const systemPool = new pg.Pool({ connectionString: asRole(db.adminUrl, SYSTEM_ROLE, SYSTEM_PASSWORD), max: 2, connectionTimeoutMillis: 2000 })
// Registered after the database's teardown, so it runs before it.
t.teardown(() => systemPool.end())

const logLines: Array<Record<string, unknown>> = []
const app = await buildApp({
  pool,
  systemPool,
  jwtSecret: JWT_SECRET,
  signedContext,
  fastify: { logger: { level: 'warn', stream: { write: (line: string) => { logLines.push(JSON.parse(line) as Record<string, unknown>) } } } }
})
t.teardown(() => app.close())

const ALICE = 'support:alice@example.com'
const BOB = 'lead:bob@example.com'
const CAROL = 'oncall:carol@example.com'
const DAVE = 'security:dave@example.com'
const started = new Date()

/** A request of `operator` acting as `tenant` (the token's act.sub claim). */
function asOperator (operator: string, tenant: { id: string }, method: 'GET' | 'POST' = 'GET', payload?: Record<string, unknown>) {
  const token = app.jwt.sign({ tenant_id: tenant.id, sub: 'demo-user', act: { sub: operator } })
  return app.inject({ method, url: '/projects', headers: { authorization: `Bearer ${token}` }, ...(payload === undefined ? {} : { payload }) })
}

async function admin (...args: string[]): Promise<Grant> {
  return await runAdmin(args, systemPool) as Grant
}

async function auditEvents (): Promise<Array<{ event: string, actor: string, tenant_id: string | null, detail: Record<string, unknown> }>> {
  const { rows } = await db.admin.query('SELECT event, actor, tenant_id, detail FROM elevated.audit_trail a ORDER BY a.seq')
  return rows
}

const names = (response: { json: () => unknown }): string[] => (response.json() as Array<{ name: string }>).map((row) => row.name)

t.afterEach(async (t) => {
  await db.assertNoLeaks(t, pool)
  await db.assertNoLeaks(t, systemPool)
})

t.test('the usage job counts every tenant through the system role and leaves its audit rows', async (t) => {
  const usage = await countUsage(app)
  const expected = Object.values(DEMO).map((tenant) => ({
    tenantId: tenant.id,
    name: tenant.name,
    projects: tenant.projects.length,
    openTasks: tenant.projects.reduce((sum, project) => sum + project.tasks.length, 0),
    doneTasks: 0
  })).sort((a, b) => a.name.localeCompare(b.name))
  t.same(usage, expected, 'both tenants, from one transaction')
  const events = (await auditEvents()).filter((row) => row.actor === USAGE_JOB.actor)
  t.same(events.map((row) => row.event), ['system_job.started', 'system_job.committed'])
})

t.test('support access: refused without a grant, read-only under one, refused after the revocation', async (t) => {
  const refused = await asOperator(ALICE, DEMO.acme)
  t.equal(refused.statusCode, 403)
  t.equal(refused.json().code, 'FST_TENANT_RLS_IMPERSONATION_REFUSED')

  await t.rejects(admin('grant', '--operator', ALICE, '--tenant', DEMO.acme.id, '--approver', ALICE.toUpperCase(), '--reason', 'ticket #4711'),
    { code: 'FST_TENANT_RLS_INVALID_GRANT' }, 'no approving one\'s own grant')
  const grant = await admin('grant', '--operator', ALICE, '--tenant', DEMO.acme.id, '--approver', BOB, '--reason', 'ticket #4711: a project is missing', '--minutes', '30')
  t.match(grant, { operator: ALICE, approver: BOB, tenantId: DEMO.acme.id, write: false, breakGlass: false })
  t.ok(grant.expiresAt.getTime() - grant.createdAt.getTime() <= 30 * 60 * 1000, 'the asked lifetime')

  const read = await asOperator(ALICE, DEMO.acme)
  t.equal(read.statusCode, 200)
  t.same(names(read), DEMO.acme.projects.map((project) => project.name).sort(), 'Acme\'s projects')
  const otherTenant = await asOperator(ALICE, DEMO.globex)
  t.equal(otherTenant.statusCode, 403, 'the grant is for Acme only')

  const write = await asOperator(ALICE, DEMO.acme, 'POST', { name: 'Written by support' })
  t.equal(write.statusCode, 403)
  t.equal(write.json().code, 'FST_TENANT_RLS_READ_ONLY_TRANSACTION')
  const { rowCount } = await db.admin.query('SELECT 1 FROM projects WHERE name = $1', ['Written by support'])
  t.equal(rowCount, 0, 'nothing was committed')

  await admin('revoke', grant.id, '--by', BOB, '--reason', 'ticket #4711 solved')
  const afterRevocation = await asOperator(ALICE, DEMO.acme)
  t.equal(afterRevocation.statusCode, 403, 'the very next request')
  t.equal(afterRevocation.json().code, 'FST_TENANT_RLS_IMPERSONATION_REFUSED')

  const requests = (await auditEvents()).filter((row) => row.event === 'impersonation.request' && row.actor === ALICE)
  t.same(requests.map((row) => [row.tenant_id, row.detail.method, row.detail.status, row.detail.admission]), [
    [DEMO.acme.id, 'GET', 403, 'refused'],
    [DEMO.acme.id, 'GET', 200, 'admitted'],
    [DEMO.globex.id, 'GET', 403, 'refused'],
    [DEMO.acme.id, 'POST', 403, 'admitted'],
    [DEMO.acme.id, 'GET', 403, 'refused']
  ], 'every impersonated request recorded, refused ones too')
})

t.test('break-glass: warned on use, unreviewed until someone else reviews it', async (t) => {
  const glass = await admin('break-glass', '--operator', CAROL, '--tenant', DEMO.globex.id, '--reason', 'incident #12: Globex cannot log in')
  t.match(glass, { breakGlass: true, approver: null, write: false })
  t.ok(glass.expiresAt.getTime() - glass.createdAt.getTime() <= 15 * 60 * 1000, 'at most 15 minutes')

  const read = await asOperator(CAROL, DEMO.globex)
  t.equal(read.statusCode, 200)
  t.same(names(read), DEMO.globex.projects.map((project) => project.name))
  t.match(logLines.filter((line) => line.grantId === glass.id), [{ level: 40, operator: CAROL, tenantId: DEMO.globex.id }], 'logged at warn')

  t.same((await runAdmin(['grants', '--unreviewed'], systemPool) as Grant[]).map((grant) => grant.id), [glass.id], 'in the review queue')
  await t.rejects(admin('review', glass.id, '--reviewer', CAROL, '--note', 'all fine'), { code: 'FST_TENANT_RLS_INVALID_GRANT' }, 'not by its operator')
  const reviewed = await admin('review', glass.id, '--reviewer', DAVE, '--note', 'statements checked against incident #12')
  t.equal(reviewed.reviewedBy, DAVE)
  t.same(await runAdmin(['grants', '--unreviewed'], systemPool), [], 'out of the queue')
})

t.test('route SQL that sets another tenant cannot read that tenant\'s grants (the signed policy)', async (t) => {
  let seen = -1
  const grantsSeen = (tenant: { id: string }, asTenant: string): Promise<void> => withTenant(pool, tenant.id, async (db) => {
    await db.execute(sql`SELECT set_config('app.current_tenant_id', ${asTenant}, true)`)
    const { rows } = await db.execute<{ count: number }>(sql`SELECT count(*)::int AS count FROM elevated.grants`)
    seen = rows[0]?.count ?? -1
  }, { schema, signedContext })
  const { rows: [globex] } = await db.admin.query<{ count: number }>('SELECT count(*)::int AS count FROM elevated.grants WHERE tenant_id = $1', [DEMO.globex.id])
  t.ok((globex?.count ?? 0) > 0, 'Globex has a grant')
  await grantsSeen(DEMO.globex, DEMO.globex.id)
  t.equal(seen, globex?.count, 'Globex\'s own transaction reads it (the admission query does)')
  // The plugin also refuses to commit the changed context; what matters here is what was read before.
  await t.rejects(grantsSeen(DEMO.acme, DEMO.globex.id), { code: 'FST_TENANT_RLS_TENANT_CONTEXT_CHANGED' })
  t.equal(seen, 0, 'an Acme transaction that sets Globex\'s id reads none')
})

t.test('Acme\'s access report lists the job and every support access to Acme, nothing of Globex', async (t) => {
  const report = await runAdmin(['report', '--tenant', DEMO.acme.id, '--from', started.toISOString()], systemPool) as Array<{ event: string, tenantId: string | null }>
  t.same(report.map((entry) => entry.event), [
    'system_job.started', 'system_job.committed',
    'impersonation.request', 'grant.created', 'impersonation.request', 'impersonation.request', 'grant.revoked', 'impersonation.request'
  ])
  t.ok(report.every((entry) => entry.tenantId === DEMO.acme.id || (entry.tenantId === null && entry.event.startsWith('system_job.'))), 'only Acme\'s rows and the system jobs')
  await t.rejects(runAdmin(['report'], systemPool), { name: 'UsageError', message: '--tenant is required' })
})

t.test('the admin script: JSON on stdout, exit code 2 on a bad command line', async (t) => {
  const env = { ...process.env, DATABASE_URL: db.adminUrl, EXAMPLE_SYSTEM_PASSWORD: SYSTEM_PASSWORD }
  async function run (...args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
    const child = spawn(process.execPath, [...LOADER, ADMIN, ...args], { env })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
    return { code, stdout, stderr }
  }
  const listed = await run('grants', '--tenant', DEMO.globex.id)
  t.equal(listed.code, 0, listed.stderr)
  t.match(JSON.parse(listed.stdout), [{ operator: CAROL, breakGlass: true, reviewedBy: DAVE }])
  const bad = await run('grant', '--operator', ALICE)
  t.equal(bad.code, 2)
  t.match(bad.stderr, /--tenant is required/)
  await t.rejects(runAdmin([], systemPool), { name: 'UsageError', message: 'name a command' })
  await t.rejects(runAdmin(['revoke'], systemPool), { name: 'UsageError', message: 'revoke takes one grant id' })
  await t.rejects(runAdmin(['grants', '--bogus'], systemPool), { name: 'UsageError', message: /bogus/ })
})

t.test('the admin script refuses a malformed --anchor or date as a usage error, before any query', async (t) => {
  await t.rejects(runAdmin(['verify', '--anchor', '12'], systemPool), { name: 'UsageError', message: /--anchor is <seq>:<hash>/ })
  await t.rejects(runAdmin(['verify', '--anchor', '12:ab:cd'], systemPool), { name: 'UsageError', message: /--anchor is <seq>:<hash>/ })
  await t.rejects(runAdmin(['report', '--tenant', DEMO.acme.id, '--from', 'last week'], systemPool), { name: 'UsageError', message: '--from must be a date such as 2026-11-01, got "last week"' })
})

t.test('at the end, the audit trail verifies clean: every row hashed and chained', async (t) => {
  const { rows: [count] } = await db.admin.query<{ rows: number }>('SELECT count(*)::int AS rows FROM elevated.audit_trail')
  t.ok((count?.rows ?? 0) > 0)
  t.match(await runAdmin(['verify'], systemPool), { ok: true, rows: count?.rows, problems: [] })
})
