// `npm run example:admin -- <command>`: the support desk's tool. It creates, revokes and reviews
// support and break-glass grants, lists them, prints a tenant's access report and verifies the
// audit trail, all through fastify-tenant-rls/elevated on a pool of the system role.
//
// Grants are written from this script, run by whoever holds the system role's password, and not
// from a route of the API: every route runs as the app role beside tenant code, and an admin route
// would need an operator login and a second person's approval of its own before it could be
// trusted to name an approver. Here the approver is whoever runs the command (a lead), the operator
// is someone else, and the database refuses the two being the same. The API only reads grants
// (the admission query) and records impersonated requests.
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { accessReport, createGrant, listGrants, openBreakGlass, reviewBreakGlass, revokeGrant, verifyAuditChain } from 'fastify-tenant-rls/elevated'
import pg from 'pg'
import { ELEVATED_TABLES } from './database.js'
import { systemRoleUrl } from './settings.js'

/** A command line that names no command, an unknown one, or misses an option. */
export class UsageError extends Error {
  override name = 'UsageError'
}

const USAGE = `usage: npm run example:admin -- <command> [options]
  grant        --operator <who> --tenant <id> --approver <who> --reason <text> [--minutes <n>] [--write]
  break-glass  --operator <who> --tenant <id> --reason <text> [--minutes <n>] [--write]
  revoke       <grant id> --by <who> --reason <text>
  review       <grant id> --reviewer <who> --note <text>
  grants       [--tenant <id>] [--live] [--unreviewed]
  report       --tenant <id> [--from <ISO date>] [--to <ISO date>]   (default: the last 30 days)
  verify       [--anchor <seq>:<hash>]                                 (exit code 1 when broken)
The system role's password: EXAMPLE_SYSTEM_PASSWORD; the database: DATABASE_URL, else the embedded one.`

const OPTIONS = {
  operator: { type: 'string' },
  tenant: { type: 'string' },
  approver: { type: 'string' },
  reason: { type: 'string' },
  minutes: { type: 'string' },
  write: { type: 'boolean' },
  by: { type: 'string' },
  reviewer: { type: 'string' },
  note: { type: 'string' },
  live: { type: 'boolean' },
  unreviewed: { type: 'boolean' },
  from: { type: 'string' },
  to: { type: 'string' },
  anchor: { type: 'string' }
} as const

const DAY_MS = 24 * 60 * 60 * 1000

function required (value: string | undefined, name: string): string {
  if (value === undefined) throw new UsageError(`--${name} is required`)
  return value
}

function date (value: string | undefined, name: string, fallback: Date): Date {
  if (value === undefined) return fallback
  const parsed = new Date(value)
  if (Number.isNaN(parsed.getTime())) throw new UsageError(`--${name} must be a date such as 2026-11-01, got ${JSON.stringify(value)}`)
  return parsed
}

// A number that is not a whole number reaches the library, which refuses it with its own code.
function minutes (value: string | undefined): { minutes?: number } {
  return value === undefined ? {} : { minutes: Number(value) }
}

/**
 * Runs one admin command on `systemPool` and returns what it prints (grants, report entries, the
 * chain's verification). Bad command lines throw UsageError; the library's refusals
 * (FST_TENANT_RLS_INVALID_GRANT, ...) are thrown as they are.
 */
export async function runAdmin (args: readonly string[], systemPool: pg.Pool): Promise<unknown> {
  let parsed
  try {
    parsed = parseArgs({ args: [...args], options: OPTIONS, allowPositionals: true, strict: true })
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  const { values: o, positionals: [command, grantId, ...rest] } = parsed
  const target = (): string => {
    if (grantId === undefined || rest.length > 0) throw new UsageError(`${String(command)} takes one grant id`)
    return grantId
  }
  switch (command) {
    case 'grant':
      return createGrant(systemPool, { operator: required(o.operator, 'operator'), tenantId: required(o.tenant, 'tenant'), approver: required(o.approver, 'approver'), reason: required(o.reason, 'reason'), write: o.write === true, ...minutes(o.minutes) }, ELEVATED_TABLES)
    case 'break-glass':
      return openBreakGlass(systemPool, { operator: required(o.operator, 'operator'), tenantId: required(o.tenant, 'tenant'), reason: required(o.reason, 'reason'), write: o.write === true, ...minutes(o.minutes) }, ELEVATED_TABLES)
    case 'revoke':
      return revokeGrant(systemPool, target(), { by: required(o.by, 'by'), reason: required(o.reason, 'reason') }, ELEVATED_TABLES)
    case 'review':
      return reviewBreakGlass(systemPool, target(), { reviewer: required(o.reviewer, 'reviewer'), note: required(o.note, 'note') }, ELEVATED_TABLES)
    case 'grants':
      return listGrants(systemPool, { ...ELEVATED_TABLES, ...(o.tenant === undefined ? {} : { tenantId: o.tenant }), live: o.live === true, unreviewed: o.unreviewed === true })
    case 'report': {
      const to = date(o.to, 'to', new Date())
      return accessReport(systemPool, required(o.tenant, 'tenant'), { ...ELEVATED_TABLES, from: date(o.from, 'from', new Date(to.getTime() - 30 * DAY_MS)), to })
    }
    case 'verify': {
      if (o.anchor === undefined) return verifyAuditChain(systemPool, ELEVATED_TABLES)
      const [seq, hash, ...extra] = o.anchor.split(':')
      if (seq === undefined || hash === undefined || extra.length > 0) throw new UsageError('--anchor is <seq>:<hash>, the head of an earlier verify')
      return verifyAuditChain(systemPool, { ...ELEVATED_TABLES, anchor: { seq, hash } })
    }
    default:
      throw new UsageError(command === undefined ? 'name a command' : `unknown command ${JSON.stringify(command)}`)
  }
}

async function main (): Promise<number> {
  const systemPool = new pg.Pool({ connectionString: systemRoleUrl(process.env.DATABASE_URL), max: 1, connectionTimeoutMillis: 5000 })
  try {
    const result = await runAdmin(process.argv.slice(2), systemPool)
    console.log(JSON.stringify(result, null, 2))
    return (result as { ok?: unknown }).ok === false ? 1 : 0
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`${error.message}\n${USAGE}`)
      return 2
    }
    const { code, message } = error as { code?: string, message?: string }
    console.error(code === undefined ? message : `${code}: ${String(message)}`)
    return 3
  } finally {
    await systemPool.end()
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = await main()
