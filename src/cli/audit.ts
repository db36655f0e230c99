// `fastify-tenant-rls audit`: parses the options, calls auditDatabase, prints the findings as a
// table (colour only on a terminal) or as JSON, and exits 1 when any error-level rule fired.
import { auditDatabase, type AuditReport } from '../audit/audit-database.js'
import { EXIT, UsageError, type CliIo, type ParsedCommand, type Subcommand } from './command.js'
import { DATABASE_URL_OPTION, databaseUrlFrom, usageOnInvalidOption, withDatabaseClient } from './connection.js'
import { paint } from './paint.js'
import type { TenantIdType } from '../tenant-id.js'

const HELP = `Usage: fastify-tenant-rls audit --app-role <role> [options]

Audits a live database for tenant isolation (reads the catalogs only) and prints every broken rule
with its id, severity, object, reason and fix. Exit code 1 when any error-level rule fired.

Options:
  --database-url <url>     connection string (default: DATABASE_URL); any role that can read the catalogs
  --app-role <role>        the role the application connects as (required)
  --schema <name>          schema whose tables are audited (default: public)
  --tenant-column <name>   column that holds the tenant (default: tenant_id)
  --setting <name>         setting the policies read (default: app.current_tenant_id)
  --tenant-id-type <type>  uuid, bigint or slug (default: uuid)
  --allow-global <t1,t2>   tables the app role may read without a tenant column (repeatable)
  --signed-context         the plugin runs with signedContext: policies that read the setting
                           themselves instead of tenant_rls.current_tenant() are errors
  --format text|json       output format (default: text)
  -h, --help               this text`

function text (values: ParsedCommand['values'], name: string): string | undefined {
  const value = values[name]
  return typeof value === 'string' ? value : undefined
}

/** The audit report as a table: severity, rule, object, then the message and the fix beneath. */
function formatAuditReport (report: AuditReport, colour: boolean): string {
  const lines = [`PostgreSQL ${report.serverVersion}, role "${report.appRole}", schema ${report.schema}: ${report.tables.length} tenant table(s)${report.tables.length > 0 ? ` (${report.tables.join(', ')})` : ''}`, '']
  if (report.findings.length > 0) {
    const ruleWidth = Math.max(4, ...report.findings.map((entry) => entry.rule.length))
    lines.push(`${'SEVERITY'.padEnd(8)}  ${'RULE'.padEnd(ruleWidth)}  OBJECT`)
    for (const entry of report.findings) {
      const severity = paint(entry.severity.padEnd(8), entry.severity === 'error' ? 'red' : 'yellow', colour)
      lines.push(`${severity}  ${entry.rule.padEnd(ruleWidth)}  ${entry.object}`)
      lines.push(`${' '.repeat(10)}${entry.message}`)
      lines.push(`${' '.repeat(10)}${paint('why:', 'dim', colour)} ${entry.why}`)
      lines.push(`${' '.repeat(10)}${paint('fix:', 'dim', colour)} ${entry.fix}`)
    }
    lines.push('')
  }
  const summary = `${report.errors} error(s), ${report.warnings} warning(s)`
  lines.push(report.ok ? paint(`ok: ${summary}`, 'green', colour) : paint(`failed: ${summary}`, 'red', colour))
  return `${lines.join('\n')}\n`
}

async function run (command: ParsedCommand, io: CliIo): Promise<typeof EXIT[keyof typeof EXIT]> {
  const appRole = text(command.values, 'app-role')
  if (appRole === undefined || appRole === '') throw new UsageError('give --app-role <role>: the role the application connects as')
  const tenantIdType = text(command.values, 'tenant-id-type')
  const allowGlobal = ((command.values['allow-global'] ?? []) as string[]).flatMap((list) => list.split(',')).map((name) => name.trim()).filter((name) => name !== '')
  const url = databaseUrlFrom(command.values)
  const report = await withDatabaseClient(url, (client) => usageOnInvalidOption(() => auditDatabase(client, {
    appRole,
    allowGlobal,
    signedContext: command.values['signed-context'] === true,
    ...(text(command.values, 'schema') === undefined ? {} : { schema: text(command.values, 'schema') as string }),
    ...(text(command.values, 'tenant-column') === undefined ? {} : { tenantColumn: text(command.values, 'tenant-column') as string }),
    ...(text(command.values, 'setting') === undefined ? {} : { setting: text(command.values, 'setting') as string }),
    ...(tenantIdType === undefined ? {} : { tenantIdType: tenantIdType as TenantIdType })
  })))
  io.stdout.write(command.format === 'json' ? `${JSON.stringify(report, null, 2)}\n` : formatAuditReport(report, io.stdoutIsTty))
  return report.ok ? EXIT.ok : EXIT.findings
}

export const auditCommand: Subcommand = {
  name: 'audit',
  summary: 'audit a live database for tenant isolation (RLS, policies, keys, bypass paths, role, server)',
  help: HELP,
  options: {
    ...DATABASE_URL_OPTION,
    'app-role': { type: 'string' },
    schema: { type: 'string' },
    'tenant-column': { type: 'string' },
    setting: { type: 'string' },
    'tenant-id-type': { type: 'string' },
    'allow-global': { type: 'string', multiple: true },
    'signed-context': { type: 'boolean' }
  },
  run
}
