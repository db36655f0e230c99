// Extra transaction-local settings beside the tenant (`app.user_id`, `request.jwt.claims`): the
// basis of per-user policies inside a tenant. The names are checked here, against the same rule as
// the tenant setting; names and values then reach SQL only as bound parameters of the opening
// (tenant-transaction.ts), which sets them with set_config(..., true) in the same round trip as the
// tenant. The tenant setting itself is refused: it comes from the verified tenant and nowhere else.
import type { FastifyRequest } from 'fastify'
import { InvalidTransactionSettingsError, TransactionSettingsFailedError } from './errors.js'
import { SETTING_NAME } from './options.js'

/** Setting name → value, each set with `set_config(name, value, true)` when the transaction opens. */
export type TransactionSettings = Readonly<Record<string, string>>

/** Returns a request's extra settings, once its tenant is resolved (`request.tenantId` is set). */
export type SettingsResolver = (request: FastifyRequest) => TransactionSettings | Promise<TransactionSettings>

/** Name/value pairs, in the order they are bound. */
export type SettingPairs = ReadonlyArray<readonly [name: string, value: string]>

/** What is wrong with `settings`, or undefined when every name and value is acceptable. */
export function settingsProblem (settings: unknown, tenantSetting: string): string | undefined {
  if (settings === null || typeof settings !== 'object' || Array.isArray(settings)) {
    return `settings must be an object of setting name to string value, got ${JSON.stringify(settings)}`
  }
  for (const [name, value] of Object.entries(settings)) {
    // PostgreSQL's own settings (statement_timeout, role, search_path…) have no dot: the rule
    // leaves them out, so this option can never loosen what the plugin sets or the server enforces.
    if (!SETTING_NAME.test(name)) return `setting name ${JSON.stringify(name)} must be lower-case identifiers joined by dots, such as 'app.user_id'`
    if (name === tenantSetting) return `${name} is the tenant setting; it is set from the verified tenant only`
    // PostgreSQL text cannot hold a NUL byte; refused here rather than by the server at the opening.
    if (typeof value !== 'string' || value.includes('\u0000')) return `the value of ${name} must be a string (without NUL bytes), got ${typeof value}`
  }
  return undefined
}

/** Runs the user's resolver for a request and checks what it returns. */
export async function resolveSettings (request: FastifyRequest, resolver: SettingsResolver, tenantSetting: string): Promise<SettingPairs> {
  let settings: unknown
  try {
    settings = await resolver(request)
  } catch (error) {
    // Like a failed tenant resolution: the request cannot be given the context its policies expect.
    request.log.warn({ err: error }, 'the settings option threw; refusing the request')
    throw new TransactionSettingsFailedError({ cause: error })
  }
  const problem = settingsProblem(settings, tenantSetting)
  if (problem !== undefined) throw new InvalidTransactionSettingsError(problem)
  return Object.entries(settings as TransactionSettings)
}
