// What the lifecycle subcommands (export, import, erase) share: the options naming the tenant and
// its tables (with the signing key of signing-options.ts), the progress line on a terminal, and a
// table of row counts for human output.
import type { TenantIdType } from '../tenant-id.js'
import type { OpenWith } from '../citus/set-local.js'
import type { LifecycleProgress, LifecycleProgressHandler, TenantScopeOptions } from '../lifecycle/tenant-scope.js'
import { UsageError } from './command.js'
import type { CliIo } from './command.js'
import { signedContextFrom, signingHelp, SIGNING_OPTION } from './signing-options.js'

/** The options that say where the tenant's rows are (defaults as in the library), and the signing key. */
export const SCOPE_OPTIONS = {
  table: { type: 'string', multiple: true },
  schema: { type: 'string' },
  'tenant-column': { type: 'string' },
  setting: { type: 'string' },
  'tenant-id-type': { type: 'string' },
  'open-with': { type: 'string' },
  ...SIGNING_OPTION
} as const

/** The --open-with line, shared with import (which takes the signing key but no other scope option). */
export const OPEN_WITH_HELP = '  --open-with <how>         set-config (default), or set-local for Citus: the tenant is set with SET LOCAL'

/** The signing option's lines in the lifecycle subcommands' --help. */
export const SIGNING_HELP = signingHelp('without it a signed table shows no rows')

/** Their lines in a subcommand's --help. */
export const SCOPE_HELP = `  --table <name>            a table to include (repeat it); default: every table with the tenant column
  --schema <name>           schema searched for tenant tables (default public)
  --tenant-column <name>    column holding the tenant id (default tenant_id)
  --setting <name>          setting the policies read (default app.current_tenant_id)
  --tenant-id-type <type>   uuid (default), bigint or slug
${SIGNING_HELP}
${OPEN_WITH_HELP}`

type Values = Record<string, unknown>

/** A string option the command cannot run without. */
export function requiredString (values: Values, name: string): string {
  const value = values[name]
  if (typeof value !== 'string' || value === '') throw new UsageError(`give --${name}`)
  return value
}

/** The scope options given on the command line (and the signing key's secret in `env`); the library checks their values. */
export function scopeFrom (values: Values, env: NodeJS.ProcessEnv = process.env): Omit<TenantScopeOptions, 'pool' | 'tenantId'> {
  const scope: Omit<TenantScopeOptions, 'pool' | 'tenantId'> = {}
  const signedContext = signedContextFrom(values, env)
  if (signedContext !== undefined) scope.signedContext = signedContext
  if (Array.isArray(values.table)) scope.tables = values.table as string[]
  if (typeof values.schema === 'string') scope.schema = values.schema
  if (typeof values['tenant-column'] === 'string') scope.tenantColumn = values['tenant-column']
  if (typeof values.setting === 'string') scope.setting = values.setting
  if (typeof values['tenant-id-type'] === 'string') scope.tenantIdType = values['tenant-id-type'] as TenantIdType
  if (typeof values['open-with'] === 'string') scope.openWith = values['open-with'] as OpenWith
  return scope
}

// A terminal redraws a line a few times a second at most; more would only cost the job time.
const REDRAW_MS = 200

/** A progress line on stderr, redrawn in place, only when stderr is a terminal; `done` ends the line. */
export function progressLine (io: CliIo, verb: string): { onProgress: LifecycleProgressHandler, done(): void } {
  if (!io.stderrIsTty) return { onProgress () {}, done () {} }
  let drawnAt = 0
  let drawn = false
  return {
    onProgress ({ table, tablesDone, tables, rows }: LifecycleProgress) {
      const now = Date.now()
      if (now - drawnAt < REDRAW_MS && rows !== 0) return
      drawnAt = now
      drawn = true
      io.stderr.write(`\r\u001b[K${verb}: ${table} (table ${tablesDone + 1} of ${tables}), ${rows.toLocaleString('en-US')} rows`)
    },
    done () {
      if (drawn) io.stderr.write('\r\u001b[K')
    }
  }
}

/** Rows per table as aligned lines: `  projects   6,003 rows`. */
export function rowLines (tables: ReadonlyArray<{ table: string, rows: number }>, suffix: (index: number) => string = () => ''): string {
  const width = Math.max(0, ...tables.map(({ table }) => table.length))
  const counts = tables.map(({ rows }) => rows.toLocaleString('en-US'))
  const countWidth = Math.max(0, ...counts.map((count) => count.length))
  return tables.map(({ table }, index) => `  ${table.padEnd(width)}  ${(counts[index] as string).padStart(countWidth)} rows${suffix(index)}\n`).join('')
}
