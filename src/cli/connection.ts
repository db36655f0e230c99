// How a subcommand reaches the database: `--database-url`, else the DATABASE_URL environment
// variable, one client for the whole command, always closed.
import pg from 'pg'
import { UsageError } from './command.js'

/** The `--database-url` option every database subcommand declares. */
export const DATABASE_URL_OPTION = { 'database-url': { type: 'string' } } as const

export function databaseUrlFrom (values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): string {
  const given = values['database-url']
  if (typeof given === 'string' && given !== '') return given
  if (env.DATABASE_URL !== undefined && env.DATABASE_URL !== '') return env.DATABASE_URL
  throw new UsageError('give --database-url <url> (or set DATABASE_URL)')
}

/** Connects one client, runs `work`, and closes the client whatever happened. */
export async function withDatabaseClient<T> (connectionString: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString, application_name: 'fastify-tenant-rls cli' })
  // A client whose server goes away (a failover, an ended backend) emits 'error' when its socket
  // closes, which, unheard, ends the process instead of the command: the command hears the failure
  // anyway, through its pending or next query, and exits 3 with the server's message.
  client.on('error', () => {})
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}

/** Runs `work`, turning a refused option (FST_TENANT_RLS_INVALID_OPTION, such as a bad --setting) into a usage error (exit 2). */
export async function usageOnInvalidOption<T> (work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (error) {
    if ((error as { code?: unknown }).code === 'FST_TENANT_RLS_INVALID_OPTION') throw new UsageError((error as Error).message)
    throw error
  }
}

/** Creates a one-connection pool for a library function that takes a pool, runs `work`, and ends the pool. */
export async function withDatabasePool<T> (connectionString: string, work: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString, application_name: 'fastify-tenant-rls cli', max: 1, connectionTimeoutMillis: 10_000 })
  try {
    return await work(pool)
  } finally {
    await pool.end()
  }
}
