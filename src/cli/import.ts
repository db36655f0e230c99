// `fastify-tenant-rls import <file>`: writes an export back with importTenant, through the
// application role, in one transaction, and prints the rows written per table.
import { importTenant } from '../lifecycle/import.js'
import { EXIT, UsageError } from './command.js'
import type { Subcommand } from './command.js'
import { DATABASE_URL_OPTION, databaseUrlFrom, withDatabasePool } from './connection.js'
import { OPEN_WITH_HELP, progressLine, rowLines, SIGNING_HELP } from './lifecycle-options.js'
import { signedContextFrom, SIGNING_OPTION } from './signing-options.js'
import type { OpenWith } from '../citus/set-local.js'

export const importCommand: Subcommand = {
  name: 'import',
  summary: 'write an export back, in one transaction under the tenant\'s setting',
  help: `Usage: fastify-tenant-rls import <file> [options]

Checks the file against its manifest (row counts, checksums) and this database's tables against
the export's (schema fingerprint), then inserts the rows parents first, in one transaction, through
the application role under the tenant's setting: a row of another tenant is refused by the
policies' WITH CHECK. The tenant's row in the tenants table must exist.

  --tenant <id>             refuse the file unless it holds this tenant
  --replace                 delete the tenant's rows here first, in the same transaction
                            (without it, a tenant that has rows here is refused)
  --database-url <url>      the application role's connection string (default: DATABASE_URL)
  --setting <name>          setting the policies read (default: the one recorded in the export)
${SIGNING_HELP}
${OPEN_WITH_HELP}
  --format text|json        json prints the result`,
  options: { ...DATABASE_URL_OPTION, ...SIGNING_OPTION, tenant: { type: 'string' }, replace: { type: 'boolean', default: false }, setting: { type: 'string' }, 'open-with': { type: 'string' } },
  allowPositionals: true,
  async run ({ values, positionals, format }, io) {
    const [from, ...extra] = positionals
    if (from === undefined || extra.length > 0) throw new UsageError('give exactly one export file')
    const url = databaseUrlFrom(values)
    const signedContext = signedContextFrom(values)
    const progress = progressLine(io, 'import')
    const result = await withDatabasePool(url, (pool) => importTenant({
      pool,
      from,
      replace: values.replace === true,
      onProgress: progress.onProgress,
      ...(typeof values.tenant === 'string' ? { tenantId: values.tenant } : {}),
      ...(typeof values.setting === 'string' ? { setting: values.setting } : {}),
      ...(signedContext === undefined ? {} : { signedContext }),
      ...(typeof values['open-with'] === 'string' ? { openWith: values['open-with'] as OpenWith } : {})
    })).finally(() => progress.done())
    if (format === 'json') {
      const { manifest, ...rest } = result
      io.stdout.write(`${JSON.stringify({ ...rest, createdAt: manifest.createdAt }, null, 2)}\n`)
    } else {
      if (result.replaced.length > 0) io.stdout.write(`Deleted the tenant's previous rows first:\n${rowLines(result.replaced)}`)
      io.stdout.write(`Imported tenant ${result.tenantId} from ${from} (exported ${result.manifest.createdAt})\n${rowLines(result.tables)}`)
    }
    return EXIT.ok
  }
}
