// A real PgBouncer (Debian's `pgbouncer` package) in transaction mode in front of the test
// PostgreSQL, started on a free port for one test file and stopped when that file is done. Its
// pool is deliberately small, so one server connection serves many clients and many tenants in
// turn: exactly the sharing that would carry a leftover tenant setting from one tenant to another.
//
// Without the binary the caller skips (with an install hint); under CI it fails instead, so the
// PgBouncer run can never silently disappear from CI.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { access, chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { eventually } from './database.js'
import { freePort } from './postgres-server.js'

export interface PgBouncer {
  /** `url` with host and port replaced by PgBouncer's. */
  route (url: string): string
  stop (): Promise<void>
}

const CANDIDATES = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']
export const INSTALL_HINT = 'PgBouncer is not installed; install it with `apt-get install -y pgbouncer` to run the PgBouncer suite'

/** The pgbouncer binary, or undefined when it is not installed. */
export async function findPgBouncer (): Promise<string | undefined> {
  for (const candidate of CANDIDATES) {
    try {
      await access(candidate)
      return candidate
    } catch {}
  }
  return undefined
}

async function acceptsConnections (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

function quoted (value: string): string {
  return `"${value.replace(/"/g, '""')}"`
}

export interface PgBouncerOptions {
  /** The PostgreSQL server PgBouncer forwards to. */
  host: string
  port: number
  /** Roles PgBouncer may log in as, with their passwords (it needs them for SCRAM to the server). */
  users: Record<string, string>
  /** Server connections per database and user pair. */
  poolSize: number
  /** Further [pgbouncer] settings, such as server_reset_query. */
  settings?: Record<string, string>
}

/**
 * Starts PgBouncer for the rest of test `t`, or returns undefined after marking `t` skipped when
 * the binary is missing (a failure instead when the CI variable is set).
 */
export async function startPgBouncer (t: Test, options: PgBouncerOptions): Promise<PgBouncer | undefined> {
  const binary = await findPgBouncer()
  if (binary === undefined) {
    if (process.env.CI !== undefined && process.env.CI !== '') {
      t.fail(`${INSTALL_HINT} (CI is set, so the PgBouncer suite must run)`)
    } else {
      t.pass('the PgBouncer suite', { skip: INSTALL_HINT })
    }
    return undefined
  }
  const dir = await mkdtemp(join(tmpdir(), 'tenant-rls-pgbouncer-'))
  const port = await freePort()
  // PgBouncer authenticates to PostgreSQL 17's SCRAM with the plain-text passwords of its auth
  // file; clients on the loopback are trusted, since only the test process reaches them.
  const users = Object.entries(options.users).map(([user, password]) => `${quoted(user)} ${quoted(password)}`).join('\n')
  const config = [
    '[databases]',
    `* = host=${options.host} port=${options.port}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = trust',
    `auth_file = ${join(dir, 'users.txt')}`,
    'pool_mode = transaction',
    `default_pool_size = ${options.poolSize}`,
    'max_client_conn = 500',
    'ignore_startup_parameters = extra_float_digits',
    'log_connections = 0',
    'log_disconnections = 0',
    ...Object.entries(options.settings ?? {}).map(([name, value]) => `${name} = ${value}`)
  ].join('\n')
  await writeFile(join(dir, 'users.txt'), `${users}\n`)
  await writeFile(join(dir, 'pgbouncer.ini'), `${config}\n`)
  // PgBouncer refuses to run as root; as root it is told to switch to the package's own user.
  const asRoot = process.getuid?.() === 0
  if (asRoot) await chmod(dir, 0o755)
  const args = asRoot ? ['-u', 'postgres', join(dir, 'pgbouncer.ini')] : [join(dir, 'pgbouncer.ini')]
  const child: ChildProcess = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let output = ''
  child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))

  try {
    await eventually(async () => {
      if (child.exitCode !== null) throw new Error('PgBouncer exited')
      return acceptsConnections(port)
    }, 'PgBouncer to accept connections', 10_000)
  } catch (error) {
    child.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
    throw new Error(`PgBouncer did not start (${(error as Error).message}): ${output}`)
  }

  const bouncer: PgBouncer = {
    route (url) {
      const target = new URL(url)
      target.hostname = '127.0.0.1'
      target.port = String(port)
      return target.toString()
    },
    async stop () {
      if (child.exitCode === null) {
        child.kill('SIGTERM')
        await exited
      }
      await rm(dir, { recursive: true, force: true })
    }
  }
  t.teardown(() => bouncer.stop())
  return bouncer
}
