// Which settings stored for the app role or its database (ALTER ROLE / ALTER DATABASE ... SET, the
// rows of pg_db_role_setting) the startup check lets through. PostgreSQL applies them to every new
// connection before the plugin sends anything, so one that changes what a query means (search_path,
// role, row_security, the tenant setting, TimeZone, default transaction modes, any custom setting a
// policy or trigger might read) changes every tenant's requests at once. Deny by default: only
// settings that bound how long or how much work a statement may take, or what the server logs,
// are harmless, because they can make a query fail (the transaction then rolls back) but never
// return or store different data.
import type { RoleProblem } from './safety-checks.js'
import { quoteIdentifier } from './sql-identifier.js'

/**
 * Stored settings the startup check accepts, lower case. Timeouts and resource limits can only
 * cancel work (which rolls back); application_name is a label; memory and JIT change plans, not
 * results. Everything else stored for the role or its database refuses the start.
 */
export const HARMLESS_STORED_SETTINGS: readonly string[] = Object.freeze([
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'idle_session_timeout',
  'transaction_timeout',
  'temp_file_limit',
  'application_name',
  'work_mem',
  'maintenance_work_mem',
  'hash_mem_multiplier',
  'jit'
])

/** Stored settings whose name starts with one of these are accepted too: they only decide what the server log gets. */
export const HARMLESS_STORED_SETTING_PREFIXES: readonly string[] = Object.freeze(['log_'])

/** One row of pg_db_role_setting that applies to the app role's connections, split into settings. */
export interface StoredSetting {
  /** `name=value` as PostgreSQL stores it (the name in its canonical spelling). */
  setting: string
  /** Stored for this role (ALTER ROLE), else for every role (ALTER ROLE ALL / ALTER DATABASE). */
  forRole: boolean
  /** Stored for this database only (IN DATABASE / ALTER DATABASE), else for every database. */
  forDatabase: boolean
}

function isHarmless (name: string): boolean {
  const lower = name.toLowerCase()
  return HARMLESS_STORED_SETTINGS.includes(lower) || HARMLESS_STORED_SETTING_PREFIXES.some((prefix) => lower.startsWith(prefix))
}

/**
 * The verdict on the stored settings of `role` (the login role) in `database`: a problem for each
 * one that changes behaviour, a warning for those only a superuser can reset (ALTER ROLE ALL).
 */
export function storedSettingVerdicts (settings: readonly StoredSetting[], role: string, database: string): { problems: RoleProblem[], warnings: RoleProblem[] } {
  const problems: RoleProblem[] = []
  const warnings: RoleProblem[] = []
  for (const { setting, forRole, forDatabase } of settings) {
    const name = setting.split('=', 1)[0] ?? setting
    if (isHarmless(name)) continue
    const problem = `has the stored setting ${setting} (${where(forRole, forDatabase)}), applied to every new connection: it changes what every tenant's queries do`
    // Settings names are identifiers in RESET; quote them so a custom "app.x" or a mixed-case name stays one.
    const target = quoteIdentifier(name)
    if (forRole) {
      problems.push({ role, problem, fix: forDatabase ? `ALTER ROLE ${quoteIdentifier(role)} IN DATABASE ${quoteIdentifier(database)} RESET ${target}` : `ALTER ROLE ${quoteIdentifier(role)} RESET ${target}` })
    } else if (forDatabase) {
      problems.push({ role, problem, fix: `ALTER DATABASE ${quoteIdentifier(database)} RESET ${target}` })
    } else {
      // ALTER ROLE ALL ... SET needs a superuser, and so does its reset: not a refusal (house rule).
      warnings.push({ role, problem, fix: `as a superuser: ALTER ROLE ALL RESET ${target}` })
    }
  }
  return { problems, warnings }
}

function where (forRole: boolean, forDatabase: boolean): string {
  if (forRole) return forDatabase ? 'ALTER ROLE ... IN DATABASE ... SET' : 'ALTER ROLE ... SET'
  return forDatabase ? 'ALTER DATABASE ... SET' : 'ALTER ROLE ALL ... SET'
}
