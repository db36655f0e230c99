// The fastify-tenant-rls binary: the dispatcher (overview, unknown command, bad options, --help of
// every subcommand, exit codes), the audit and explain subcommands in-process with captured
// streams, and once, the real built binary as CI would run it.
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { runCli } from '../dist/cli/run-cli.js'
import { SUBCOMMANDS } from '../dist/cli/subcommands.js'
import { baselineSql } from './helpers/audit-world.js'
import { createTestDatabase } from './helpers/database.js'

const ESCAPE = String.fromCharCode(27)
const BIN = fileURLToPath(new URL('../dist/cli/bin.js', import.meta.url))

/** Runs the command line in-process; returns the exit code and what was written. */
async function cli (argv: string[], tty = false): Promise<{ code: number, stdout: string, stderr: string }> {
  let stdout = ''
  let stderr = ''
  const code = await runCli(argv, {
    stdout: { write: (chunk: string) => { stdout += chunk } },
    stderr: { write: (chunk: string) => { stderr += chunk } },
    stdoutIsTty: tty,
    stderrIsTty: tty
  })
  return { code, stdout, stderr }
}

t.test('no command prints the overview and exits 2; --help exits 0', async (t) => {
  const none = await cli([])
  t.equal(none.code, 2)
  t.match(none.stdout, /Usage: fastify-tenant-rls <command>/)
  for (const command of SUBCOMMANDS) t.match(none.stdout, new RegExp(`\\n  ${command.name} +${command.summary.replace(/[()]/g, '\\$&')}`))
  t.equal((await cli(['--help'])).code, 0)
})

t.test('an unknown command exits 2 with the overview on stderr', async (t) => {
  const result = await cli(['audti'])
  t.equal(result.code, 2)
  t.match(result.stderr, /unknown command "audti"/)
  t.match(result.stderr, /Commands:/)
  t.equal(result.stdout, '')
})

t.test('a bad option exits 2 with the subcommand\'s usage', async (t) => {
  const unknown = await cli(['audit', '--app-rol', 'x'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /Unknown option '--app-rol'/)
  t.match(unknown.stderr, /Usage: fastify-tenant-rls audit/)
  t.equal((await cli(['audit', '--app-role', 'x', '--format', 'xml'])).code, 2, 'a format that does not exist')
  t.equal((await cli(['audit', 'stray'])).code, 2, 'a positional the audit does not take')
  const missing = await cli(['audit', '--database-url', 'postgres://nowhere/db'])
  t.equal(missing.code, 2)
  t.match(missing.stderr, /give --app-role/)
})

t.test('every subcommand prints its --help and exits 0', async (t) => {
  t.ok(SUBCOMMANDS.length >= 2)
  for (const command of SUBCOMMANDS) {
    const result = await cli([command.name, '--help'])
    t.equal(result.code, 0, command.name)
    t.equal(result.stdout, `${command.help}\n`)
  }
})

t.test('a database that cannot be reached exits 3', async (t) => {
  const result = await cli(['audit', '--database-url', 'postgres://nobody@127.0.0.1:1/none', '--app-role', 'app'])
  t.equal(result.code, 3)
  t.match(result.stderr, /^fastify-tenant-rls audit: /)
})

t.test('against a database', async (t) => {
  const db = await createTestDatabase(t)
  await db.asOwner(baselineSql('public', db.appRole))
  const tenant = randomUUID()
  await db.admin.query('INSERT INTO tenants (id) VALUES ($1)', [tenant])
  const target = ['--database-url', db.adminUrl, '--app-role', db.appRole]

  t.test('audit: a clean database exits 0, no colour off a terminal', async (t) => {
    const result = await cli(['audit', ...target])
    t.equal(result.code, 0, result.stdout)
    t.match(result.stdout, /role ".*", schema public: 1 tenant table\(s\) \(items\)\n\nok: 0 error\(s\), 0 warning\(s\)\n$/)
    t.notOk(result.stdout.includes(ESCAPE), 'no escape sequence')
    t.ok((await cli(['audit', ...target], true)).stdout.includes(`${ESCAPE}[32mok`), 'green on a terminal')
  })

  t.test('audit: an unknown role exits 3, a bad --setting or --tenant-id-type exits 2', async (t) => {
    const unknown = await cli(['audit', '--database-url', db.adminUrl, '--app-role', 'no_such_role_here'])
    t.equal(unknown.code, 3)
    t.match(unknown.stderr, /no_such_role_here/)
    t.equal((await cli(['audit', ...target, '--setting', 'no dots'])).code, 2)
    t.equal((await cli(['audit', ...target, '--tenant-id-type', 'int'])).code, 2)
  })

  t.test('explain prints the plan; bad input exits 2', async (t) => {
    const result = await cli(['explain', ...target, '--tenant', tenant, 'SELECT * FROM items'])
    t.match(result.stdout, /on public\.items/)
    t.match(result.stdout, /Execution time: .* ms \(rolled back\)/)
    const json = await cli(['explain', ...target, '--tenant', tenant, '--format', 'json', 'SELECT * FROM items'])
    t.ok(Array.isArray(JSON.parse(json.stdout).plan))
    t.equal((await cli(['explain', ...target, '--tenant', 'not-a-uuid', 'SELECT 1'])).code, 2)
    t.equal((await cli(['explain', ...target, '--tenant', tenant])).code, 2, 'no statement')
    t.equal((await cli(['explain', ...target, 'SELECT 1'])).code, 2, 'no tenant')
  })

  t.test('the built binary gates CI: exit 1 and the rule ids as JSON', async (t) => {
    await db.asOwner('ALTER TABLE items NO FORCE ROW LEVEL SECURITY')
    const run = promisify(execFile)
    const failure = await run(process.execPath, [BIN, 'audit', ...target, '--format', 'json']).then(() => undefined, (error: { code: number, stdout: string }) => error)
    t.equal(failure?.code, 1)
    const report = JSON.parse(failure?.stdout ?? '{}') as { ok: boolean, findings: Array<{ rule: string, object: string }> }
    t.equal(report.ok, false)
    t.same(report.findings.map(({ rule, object }) => `${rule} ${object}`), ['tables.rls-not-forced items'])
  })
})
