// `fastify-tenant-rls explain`: parses the options, calls explainUnderTenant, prints the plan and
// what it flags (or JSON), and exits 1 when the plan has a flagged shape. Signed mode as the lifecycle
// subcommands take it (signing-options.ts).
import { explainUnderTenant, type ExplainReport } from '../audit/explain.js'
import type { TenantIdType } from '../tenant-id.js'
import { EXIT, UsageError, type CliIo, type ExitCode, type ParsedCommand, type Subcommand } from './command.js'
import { DATABASE_URL_OPTION, databaseUrlFrom, usageOnInvalidOption, withDatabaseClient } from './connection.js'
import { paint } from './paint.js'
import { signedContextFrom, signingHelp, SIGNING_KEY_ENV, SIGNING_OPTION } from './signing-options.js'

const HELP = `Usage: fastify-tenant-rls explain --app-role <role> --tenant <id> [options] "<sql>"

Runs EXPLAIN (ANALYZE, BUFFERS) of one statement as the app role with the tenant's setting (signed
with --signing-key-id), inside a transaction that is rolled back, and flags sequential scans of
tenant tables, the policy applied as a filter instead of an index condition, and a policy evaluated
per row. Exit code 1 when it flags any.

Options:
  --database-url <url>      connection string (default: DATABASE_URL); the app role or a role that may SET ROLE to it
  --app-role <role>         the role the application connects as (required)
  --tenant <id>             the tenant whose setting the statement runs with (required)
  --setting <name>          setting the policies read (default: app.current_tenant_id)
  --tenant-id-type <type>   uuid, bigint or slug (default: uuid)
  --tenant-column <name>    column that marks a tenant table (default: tenant_id)
${signingHelp('without it a plan that reads a\n                            signed table is refused (exit 2), as is a key the database does not hold (exit 3)')}
  --format text|json        output format (default: text)
  -h, --help                this text`

/** The plan and its findings, for a terminal. */
function formatExplainReport (report: ExplainReport, colour: boolean): string {
  const lines = [report.plan, `Execution time: ${report.executionMs} ms (rolled back)`, '']
  for (const entry of report.findings) {
    lines.push(`${paint(entry.severity, 'yellow', colour)}  ${entry.rule}  ${entry.object}`, `          ${entry.message}`, `          ${paint('fix:', 'dim', colour)} ${entry.fix}`)
  }
  lines.push(report.findings.length === 0 ? paint('ok: no flagged plan shape', 'green', colour) : paint(`flagged: ${report.findings.length} plan shape(s)`, 'yellow', colour))
  return `${lines.join('\n')}\n`
}

function option (values: ParsedCommand['values'], name: string): string | undefined {
  const value = values[name]
  return typeof value === 'string' && value !== '' ? value : undefined
}

async function run (command: ParsedCommand, io: CliIo): Promise<ExitCode> {
  const appRole = option(command.values, 'app-role')
  const tenant = option(command.values, 'tenant')
  if (appRole === undefined) throw new UsageError('give --app-role <role>')
  if (tenant === undefined) throw new UsageError('give --tenant <id>')
  if (command.positionals.length !== 1) throw new UsageError('give exactly one SQL statement, quoted, after the options')
  const setting = option(command.values, 'setting')
  const tenantIdType = option(command.values, 'tenant-id-type')
  const tenantColumn = option(command.values, 'tenant-column')
  const signedContext = signedContextFrom(command.values)
  const url = databaseUrlFrom(command.values)
  const report = await withDatabaseClient(url, (client) => usageOnInvalidOption(() => explainUnderTenant(client, {
    appRole,
    tenant,
    sql: command.positionals[0] as string,
    ...(setting === undefined ? {} : { setting }),
    ...(tenantIdType === undefined ? {} : { tenantIdType: tenantIdType as TenantIdType }),
    ...(tenantColumn === undefined ? {} : { tenantColumn }),
    ...(signedContext === undefined ? {} : { signedContext })
  }).catch((error: unknown) => {
    const code = (error as { code?: unknown }).code
    if (code === 'FST_TENANT_RLS_TENANT_INVALID') throw new UsageError(`--tenant ${JSON.stringify(tenant)} is not a tenant id in canonical form`)
    if (code === 'FST_TENANT_RLS_SIGNED_CONTEXT_REQUIRED') throw new UsageError(`${(error as Error).message}: on the command line, --signing-key-id <id> with the key's secret in ${SIGNING_KEY_ENV}`)
    throw error
  })))
  io.stdout.write(command.format === 'json' ? `${JSON.stringify({ plan: report.json, executionMs: report.executionMs, findings: report.findings }, null, 2)}\n` : formatExplainReport(report, io.stdoutIsTty))
  return report.findings.length === 0 ? EXIT.ok : EXIT.findings
}

export const explainCommand: Subcommand = {
  name: 'explain',
  summary: 'EXPLAIN ANALYZE one statement as the app role under a tenant, and flag slow RLS plan shapes',
  help: HELP,
  options: {
    ...DATABASE_URL_OPTION,
    'app-role': { type: 'string' },
    tenant: { type: 'string' },
    setting: { type: 'string' },
    'tenant-id-type': { type: 'string' },
    'tenant-column': { type: 'string' },
    ...SIGNING_OPTION
  },
  allowPositionals: true,
  run
}
