// `npm start` without DATABASE_URL when the embedded PostgreSQL's port is taken (a second
// `npm start`, a local PostgreSQL): it exits with a message that names the port and what to do,
// before it touches the data folder.
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const SERVER = fileURLToPath(new URL('../src/server.ts', import.meta.url))
// The TypeScript loader tap runs this file with, so the child runs the same source.
const LOADER = process.execArgv.filter((arg) => arg.includes('typescript'))

t.test('a taken embedded PostgreSQL port is named as the cause', async (t) => {
  const occupier = createServer()
  await new Promise<void>((resolve) => occupier.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => occupier.close(() => resolve())))
  const { port } = occupier.address() as AddressInfo

  const child = spawn(process.execPath, [...LOADER, SERVER], {
    env: { ...process.env, DATABASE_URL: '', EMBEDDED_POSTGRES_PORT: String(port), PORT: '0' }
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))

  t.equal(code, 1, 'the example exits with an error')
  t.match(output, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use .*set EMBEDDED_POSTGRES_PORT to a free port`), 'the message names the port and the fix')
  t.notMatch(output, /^undefined$/m, 'not the bare undefined embedded-postgres rejects with')
})
