// The README's error table and the errors the package creates stay in step: every code has one
// row, every row names a code that exists, and the status column is the error's HTTP status (a 500
// may be written '—': the errors no request sees, from options, startup checks and the tools).
import { readFileSync } from 'node:fs'
import t from 'tap'
import { errors } from 'fastify-tenant-rls'

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')

t.test('every FST_TENANT_RLS_* error has exactly one README row with its status, and every row an error', async (t) => {
  const created = new Map<string, number>()
  for (const value of Object.values(errors)) {
    // Every @fastify/error constructor; other exports (failOption) are not error classes.
    if (typeof value !== 'function' || !(value.prototype instanceof Error)) continue
    const { code, statusCode } = new (value as new () => { code: string, statusCode: number })()
    if (code.startsWith('FST_TENANT_RLS_')) created.set(code, statusCode)
  }
  const rows = new Map<string, string[]>()
  for (const [, code, status] of readme.matchAll(/^\| `(FST_TENANT_RLS_\w+)` \| ([^|]+) \|/gm)) {
    rows.set(code as string, [...rows.get(code as string) ?? [], (status as string).trim()])
  }
  t.ok(created.size > 0, 'the errors namespace was read')
  t.same([...rows.keys()].filter((code) => !created.has(code)), [], 'no README row for a code the package does not create')
  for (const [code, statusCode] of created) {
    const [status, ...more] = rows.get(code) ?? []
    t.ok(status !== undefined && more.length === 0, `${code}: one README row`)
    t.ok(status === String(statusCode) || (statusCode === 500 && status === '—'), `${code}: status ${statusCode}, README says ${String(status)}`)
  }
})
