// Where the database time of a request goes: pg_stat_statements (planning and execution time per
// normalised statement) read around a short extra load pass per target, divided by the requests
// served. The module is loaded on the embedded server; on a DATABASE_URL server without it, or
// without the rights to use it, the profile is skipped and the results say so. Tracking is off
// during the measured rounds and on only during these passes.
import pg from 'pg'
import { APP_ROLE, MANUAL_ROLE, SIGNED_ROLE } from './seed.js'

export interface StatementCost {
  /** The normalised statement, whitespace collapsed, cut to 80 characters. */
  statement: string
  callsPerRequest: number
  /** Planning + execution microseconds per request. */
  microseconds: number
}

export interface StatementProfile {
  target: string
  requests: number
  /** Planning + execution microseconds per request, all statements together. */
  microseconds: number
  statements: StatementCost[]
}

export interface StatementProfiler {
  /** Starts tracking from zero. */
  start (): Promise<void>
  /** What was tracked since start(), per request; tracking stops. */
  read (target: string, requests: number): Promise<StatementProfile>
  close (): Promise<void>
}

// Set through ALTER SYSTEM (a command-line value would outrank it) and applied with a reload.
async function track (client: pg.Client, what: 'top' | 'none'): Promise<void> {
  await client.query(`ALTER SYSTEM SET pg_stat_statements.track = '${what}'`)
  await client.query('SELECT pg_reload_conf()')
}

/** Loads the extension with tracking off; undefined when pg_stat_statements cannot be used. */
export async function prepareStatementProfiler (adminUrl: string): Promise<StatementProfiler | undefined> {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    await client.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements')
    await client.query('SELECT count(*) FROM pg_stat_statements')
    await track(client, 'none')
  } catch {
    await client.end()
    return undefined
  }
  return {
    async start () {
      await client.query('SELECT pg_stat_statements_reset()')
      await track(client, 'top')
    },
    async read (target, requests) {
      await track(client, 'none')
      const { rows } = await client.query<{ statement: string, calls: string, ms: number }>(`
        SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 80) AS statement, calls, total_plan_time + total_exec_time AS ms
        FROM pg_stat_statements
        WHERE userid IN (SELECT oid FROM pg_roles WHERE rolname IN ($1, $2, $3))
        ORDER BY total_plan_time + total_exec_time DESC`, [APP_ROLE, MANUAL_ROLE, SIGNED_ROLE])
      const statements = rows.map((row) => ({
        statement: row.statement,
        callsPerRequest: Number(row.calls) / requests,
        microseconds: row.ms * 1000 / requests
      }))
      return { target, requests, microseconds: statements.reduce((sum, cost) => sum + cost.microseconds, 0), statements }
    },
    async close () {
      await client.query('ALTER SYSTEM RESET pg_stat_statements.track').catch(() => {})
      await client.query('SELECT pg_reload_conf()').catch(() => {})
      await client.end()
    }
  }
}
