// Hostile input: forged and malformed tokens, tenant claims of every wrong type and shape, huge
// and NUL-laden values, and requests whose path or headers name another tenant than the token.
// Tokens are built by hand (not with the app's signer), so a claim the signer would refuse can
// still be tried. Each case asserts the exact status and error code, that no connection was taken
// for a refused request, and that the token alone decides the tenant.
import { createHmac, generateKeyPairSync, randomUUID, sign } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import type { FastifyRequest } from 'fastify'
import t from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { JWT_SECRET } from '../helpers/fixture.js'
import { attackApp, committed, createWorld, documents } from './documents.js'
import { dbOf } from './isolation-cases.js'

const db = await createTestDatabase(t)
const { tenants: [a, b] } = await createWorld(db)
const pool = db.appPool({ max: 2 })
let checkouts = 0
pool.on('acquire', () => { checkouts++ })

async function visible (request: FastifyRequest): Promise<string[]> {
  const rows = await dbOf(request).selectDistinct({ tenantId: documents.tenantId }).from(documents)
  return rows.map((row) => row.tenantId)
}
const { app } = await attackApp(t, pool, { visible, 'tenants/:tenantId/documents': visible })

const base64url = (value: string | Buffer): string => Buffer.from(value).toString('base64url')
const now = (): number => Math.floor(Date.now() / 1000)

/** A token with exactly this header and payload, HMAC-signed with the app's secret unless `signer` says otherwise. */
function token (payload: unknown, header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT' }, signer?: (input: string) => string): string {
  const input = `${base64url(JSON.stringify(header))}.${base64url(typeof payload === 'string' ? payload : JSON.stringify(payload))}`
  const algorithm = String(header.alg).replace(/^HS/, 'sha')
  const signature = signer !== undefined ? signer(input) : createHmac(algorithm, JWT_SECRET).update(input).digest('base64url')
  return `${input}.${signature}`
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
const megabyte = 'x'.repeat(1024 * 1024)

const FIXED_401_MESSAGE = /^Authentication failed: (no credentials were sent|the token is malformed|the token has expired|the token is not valid yet|the token signature or claims are invalid|the credentials were not accepted)$/

interface InputCase { name: string, token: () => string, status: number, code?: string, sees?: () => string[] }

const cases: InputCase[] = [
  { name: 'alg none, no signature', token: () => token({ tenant_id: a }, { alg: 'none', typ: 'JWT' }, () => ''), status: 401, code: 'FST_TENANT_RLS_UNAUTHENTICATED' },
  { name: 'RS256 signed by a key the app never saw', token: () => token({ tenant_id: a }, { alg: 'RS256', typ: 'JWT' }, (input) => sign('sha256', Buffer.from(input), privateKey).toString('base64url')), status: 401, code: 'FST_TENANT_RLS_UNAUTHENTICATED' },
  { name: 'HS256 signed with another secret', token: () => token({ tenant_id: a }, undefined, (input) => createHmac('sha256', 'another-secret').update(input).digest('base64url')), status: 401, code: 'FST_TENANT_RLS_UNAUTHENTICATED' },
  { name: 'HS512 with the right secret is accepted today (same key, same algorithm family)', token: () => token({ tenant_id: a }, { alg: 'HS512', typ: 'JWT' }), status: 200, sees: () => [a] },
  { name: 'a payload that is not JSON', token: () => token('{"tenant_id":'), status: 401, code: 'FST_TENANT_RLS_UNAUTHENTICATED' },
  { name: 'nbf in the future', token: () => token({ tenant_id: a, nbf: now() + 3600 }), status: 401, code: 'FST_TENANT_RLS_UNAUTHENTICATED' },
  { name: 'exp in the past', token: () => token({ tenant_id: a, exp: now() - 3600 }), status: 401, code: 'FST_TENANT_RLS_UNAUTHENTICATED' },
  { name: 'non-numeric exp', token: () => token({ tenant_id: a, exp: 'tomorrow' }), status: 401, code: 'FST_TENANT_RLS_UNAUTHENTICATED' },
  { name: 'tenant claim absent', token: () => token({ sub: 'user' }), status: 403, code: 'FST_TENANT_RLS_TENANT_MISSING' },
  { name: 'tenant claim null', token: () => token({ tenant_id: null }), status: 403, code: 'FST_TENANT_RLS_TENANT_MISSING' },
  { name: 'tenant claim empty', token: () => token({ tenant_id: '' }), status: 403, code: 'FST_TENANT_RLS_TENANT_MISSING' },
  { name: 'tenant claim only under __proto__', token: () => token(`{"__proto__":{"tenant_id":"${a}"}}`), status: 403, code: 'FST_TENANT_RLS_TENANT_MISSING' },
  { name: 'tenant claim a number', token: () => token({ tenant_id: 42 }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim a boolean', token: () => token({ tenant_id: true }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim an array holding a valid id', token: () => token({ tenant_id: [a] }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim an object holding a valid id', token: () => token({ tenant_id: { id: a } }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim the nil UUID', token: () => token({ tenant_id: '00000000-0000-0000-0000-000000000000' }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim in braces', token: () => token({ tenant_id: `{${a}}` }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim without hyphens', token: () => token({ tenant_id: a.replaceAll('-', '') }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim upper case is the same tenant, normalised', token: () => token({ tenant_id: a.toUpperCase() }), status: 200, sees: () => [a] },
  { name: "tenant claim ' OR 1=1 --", token: () => token({ tenant_id: "' OR 1=1 --" }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim a valid id followed by stacked SQL', token: () => token({ tenant_id: `${a}'; SET app.current_tenant_id = '${b}'; --` }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim of 36 characters that is SQL', token: () => token({ tenant_id: `';select pg_sleep(10);--${'-'.repeat(11)}` }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim a valid id with a trailing NUL', token: () => token({ tenant_id: `${a}\u0000` }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim of 36 characters with a NUL inside', token: () => token({ tenant_id: `${a.slice(0, 8)}\u0000${a.slice(9)}` }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'tenant claim of 1 MB', token: () => token({ tenant_id: megabyte }), status: 403, code: 'FST_TENANT_RLS_TENANT_INVALID' },
  { name: 'a 1 MB token with a valid tenant (through inject, which has no header limit)', token: () => token({ tenant_id: a, padding: megabyte }), status: 200, sees: () => [a] }
]

for (const inputCase of cases) {
  t.test(inputCase.name, async (t) => {
    const before = { checkouts, rows: await committed(db) }
    const response = await app.inject({ method: 'POST', url: '/visible', headers: { authorization: `Bearer ${inputCase.token()}` } })
    t.equal(response.statusCode, inputCase.status, 'status')
    if (inputCase.code !== undefined) {
      t.equal(response.json().code, inputCase.code, 'error code')
      // One fixed sentence per cause (authentication.ts): nothing of the verifier's own text.
      if (inputCase.status === 401) t.match(response.json().message, FIXED_401_MESSAGE, 'a fixed 401 message')
      t.equal(checkouts, before.checkouts, 'refused before any connection was taken')
    }
    if (inputCase.sees !== undefined) t.same(response.json(), inputCase.sees(), 'the rows of the token tenant only')
    t.same(await committed(db), before.rows, 'nothing was committed')
    await db.assertNoLeaks(t, pool)
  })
}

t.test('a path or a header naming another tenant changes nothing: the token is the only authority', async (t) => {
  const authorization = `Bearer ${token({ tenant_id: a })}`
  const byPath = await app.inject({ method: 'POST', url: `/tenants/${b}/documents`, headers: { authorization } })
  t.same([byPath.statusCode, byPath.json()], [200, [a]], 'path naming B')
  for (const header of ['x-tenant-id', 'x-tenant', 'tenant-id']) {
    const byHeader = await app.inject({ method: 'POST', url: '/visible', headers: { authorization, [header]: b } })
    t.same([byHeader.statusCode, byHeader.json()], [200, [a]], `${header} naming B`)
  }
  const unknown = await app.inject({ method: 'POST', url: `/tenants/${randomUUID()}/documents`, headers: { authorization } })
  t.same([unknown.statusCode, unknown.json()], [200, [a]], 'path naming a tenant that does not exist')
  await db.assertNoLeaks(t, pool)
})

t.test('over HTTP, a huge token is refused by Node before the app runs (431), taking no connection', async (t) => {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const before = checkouts
  const outcome = await new Promise<string>((resolve) => {
    const outgoing = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/visible', headers: { authorization: `Bearer ${token({ tenant_id: a, padding: megabyte })}` } })
    outgoing.on('response', (response) => { response.resume(); resolve(String(response.statusCode)) })
    outgoing.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
    outgoing.end()
  })
  t.equal(outcome, '431')
  t.equal(checkouts, before, 'no connection was taken')
  await db.assertNoLeaks(t, pool)
})
