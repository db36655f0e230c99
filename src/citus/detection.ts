// The startup check that pairs with `openWith`: a database with the citus extension, opened with
// set_config, gives its workers no tenant (Citus does not pass function calls on), so every policy
// there denies: tenants see none of their distributed rows and every insert fails, with no error
// that says why. Found by one catalog read at ready and reported as a warning with its fix; the
// plugin still starts (the coordinator's own tables, and a Citus install not yet distributing
// anything, work as before).
import type { Pool } from 'pg'
import type { OpenWith } from './set-local.js'

/** A problem the check found, and how to fix it. */
export interface CitusOpeningWarning {
  problem: string
  fix: string
}

// pg_extension is readable by every role: the app role's own pool can answer it.
const CITUS_INSTALLED_SQL = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') AS installed"

/** What is wrong with opening `pool`'s database with `openWith`, or undefined when nothing is. */
export async function inspectCitusOpening (pool: Pool, openWith: OpenWith): Promise<CitusOpeningWarning | undefined> {
  if (openWith === 'set-local') return undefined
  const { rows: [row] } = await pool.query<{ installed: boolean }>(CITUS_INSTALLED_SQL)
  if (row?.installed !== true) return undefined
  return {
    problem: 'the database has the citus extension, and the plugin sets the tenant with set_config, which Citus does not pass on to its workers: policies on distributed tables would see no tenant, so tenants would read none of their rows there and every insert would fail',
    fix: "register the plugin with openWith: 'set-local' (and give the lifecycle tools the same)"
  }
}
