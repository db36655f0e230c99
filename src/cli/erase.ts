// `fastify-tenant-rls erase`: without --confirm, the dry run (inspectTenantErasure) prints what
// would be deleted; with --confirm <tenant id> retyped, eraseTenant deletes it in one transaction
// and verifies nothing of the tenant is left.
import { eraseTenant, inspectTenantErasure } from '../lifecycle/erase.js'
import type { ErasureReport } from '../lifecycle/erase.js'
import { normalizeTenantId } from '../tenant-id.js'
import type { TenantIdType } from '../tenant-id.js'
import { EXIT, UsageError } from './command.js'
import type { Subcommand } from './command.js'
import { DATABASE_URL_OPTION, databaseUrlFrom, withDatabasePool } from './connection.js'
import { requiredString, rowLines, SCOPE_HELP, SCOPE_OPTIONS, scopeFrom } from './lifecycle-options.js'

function describe (report: ErasureReport): string {
  const tenantsRow = report.tenantsTable === null ? [] : [{ table: report.tenantsTable, rows: report.tenantRow ? 1 : 0 }]
  const lines = rowLines([...report.tables, ...tenantsRow], (index) => index === report.tables.length ? ' (the tenant\'s own row)' : '')
  if (report.dryRun) {
    return `Dry run: erasing tenant ${report.tenantId} would delete ${report.total.toLocaleString('en-US')} row(s):\n${lines}` +
      `Nothing was deleted. To erase, run again with --confirm ${report.tenantId}\n`
  }
  return `Erased tenant ${report.tenantId}: deleted ${report.total.toLocaleString('en-US')} row(s), and verified none is left:\n${lines}`
}

export const eraseCommand: Subcommand = {
  name: 'erase',
  summary: 'delete every row of one tenant (a dry run unless --confirm <tenant id>)',
  help: `Usage: fastify-tenant-rls erase --tenant <id> [--confirm <id>] [options]

Without --confirm: a dry run, printing how many rows of each table would be deleted.
With --confirm and the tenant id retyped: deletes the tenant's rows (children first) and its row in
the tenants table, in one transaction, and rolls back unless nothing of the tenant is left.
Connect as a role that may delete the tenants row (the tables' owner, or an admin).

  --tenant <id>             the tenant to erase
  --confirm <id>            the same tenant id, retyped: erase for real
  --tenants-table <name>    the tenants table (default: the one the tenant column references)
  --database-url <url>      connection string (default: DATABASE_URL)
${SCOPE_HELP}
  --format text|json        json prints the report`,
  options: { ...DATABASE_URL_OPTION, ...SCOPE_OPTIONS, tenant: { type: 'string' }, confirm: { type: 'string' }, 'tenants-table': { type: 'string' } },
  async run ({ values, format }, io) {
    const tenantId = requiredString(values, 'tenant')
    const confirm = values.confirm
    const scope = { ...scopeFrom(values), tenantId, ...(typeof values['tenants-table'] === 'string' ? { tenantsTable: values['tenants-table'] } : {}) }
    if (typeof confirm === 'string' && normalizeTenantId(confirm, scope.tenantIdType as TenantIdType | undefined) !== normalizeTenantId(tenantId, scope.tenantIdType as TenantIdType | undefined)) {
      throw new UsageError('--confirm must repeat the tenant id given in --tenant; nothing was erased')
    }
    const url = databaseUrlFrom(values)
    const report = await withDatabasePool(url, (pool) => typeof confirm === 'string'
      ? eraseTenant({ ...scope, pool, confirm })
      : inspectTenantErasure({ ...scope, pool }))
    io.stdout.write(format === 'json' ? `${JSON.stringify(report, null, 2)}\n` : describe(report))
    return EXIT.ok
  }
}
