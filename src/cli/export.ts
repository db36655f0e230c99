// `fastify-tenant-rls export`: writes one tenant's rows to a file with exportTenant, through the
// application role, and prints the manifest's tables.
import { exportTenant } from '../lifecycle/export.js'
import { EXIT } from './command.js'
import type { Subcommand } from './command.js'
import { DATABASE_URL_OPTION, databaseUrlFrom, withDatabasePool } from './connection.js'
import { progressLine, requiredString, rowLines, SCOPE_HELP, SCOPE_OPTIONS, scopeFrom } from './lifecycle-options.js'

export const exportCommand: Subcommand = {
  name: 'export',
  summary: 'write every row of one tenant to a file, with its manifest',
  help: `Usage: fastify-tenant-rls export --tenant <id> --out <file> [options]

Reads every row of the tenant from one snapshot, through the application role under the tenant's
setting (row-level security keeps other tenants out), parents first, and writes it with a manifest:
tables, row counts, SHA-256 checksums, schema fingerprint, PostgreSQL version, snapshot time.

  --tenant <id>             the tenant to export
  --out <file>              the file to create (never overwritten)
  --database-url <url>      the application role's connection string (default: DATABASE_URL)
${SCOPE_HELP}
  --format text|json        json prints the manifest`,
  options: { ...DATABASE_URL_OPTION, ...SCOPE_OPTIONS, tenant: { type: 'string' }, out: { type: 'string' } },
  async run ({ values, format }, io) {
    const tenantId = requiredString(values, 'tenant')
    const out = requiredString(values, 'out')
    const url = databaseUrlFrom(values)
    const progress = progressLine(io, 'export')
    const manifest = await withDatabasePool(url, (pool) => exportTenant({ ...scopeFrom(values), pool, tenantId, out, onProgress: progress.onProgress }))
      .finally(() => progress.done())
    if (format === 'json') {
      io.stdout.write(`${JSON.stringify(manifest, null, 2)}\n`)
    } else {
      io.stdout.write(`Exported tenant ${manifest.tenantId} to ${out} (snapshot ${manifest.createdAt}, PostgreSQL ${manifest.serverVersion})\n`)
      io.stdout.write(rowLines(manifest.tables.map(({ name, rows }) => ({ table: name, rows })), (index) => `  sha256 ${manifest.tables[index]?.sha256.slice(0, 16)}…`))
    }
    return EXIT.ok
  }
}
