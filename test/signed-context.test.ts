// The signedContext option and the signer, without a database: what register refuses (with a
// message that names the problem and never the secret), and the exact signature format that
// tenant_rls.current_tenant() verifies (signed-context-sql.test.ts checks the two agree).
import { createHmac, randomBytes } from 'node:crypto'
import t from 'tap'
import { DEFAULT_SIGNATURE_TTL, validateSignedContext } from '../src/signed-context/options.js'
import { SIGNATURE_SETTING, signTenantContext } from '../src/signed-context/signer.js'

const SECRET = 'a-secret-of-exactly-thirty-two-b'
const OTHER = randomBytes(48)

t.test('valid keys: the first signs, every key is kept in order, the ttl defaults', async (t) => {
  const context = validateSignedContext({ keys: [{ id: 'k2', secret: OTHER }, { id: 'k1', secret: SECRET }] })
  t.equal(context.signingKey.id, 'k2')
  t.same(context.keys.map((key) => key.id), ['k2', 'k1'])
  t.ok(context.keys[1]?.secret.export().equals(Buffer.from(SECRET)), 'a string secret is its UTF-8 bytes')
  t.equal(context.ttl, DEFAULT_SIGNATURE_TTL)
  t.equal(validateSignedContext({ keys: [{ id: 'k1', secret: SECRET }], ttl: 1000 }).ttl, 1000)
})

const refused: Array<[string, unknown, RegExp]> = [
  ['not an object', 'keys', /must be an object \{ keys/],
  ['an array', [], /must be an object \{ keys/],
  ['no keys', {}, /keys must be a non-empty array/],
  ['an empty key list', { keys: [] }, /keys must be a non-empty array/],
  ['a key that is not an object', { keys: ['k1'] }, /keys\[0\] must be an object \{ id, secret \}/],
  ['a key id with a dot', { keys: [{ id: 'k.1', secret: SECRET }] }, /keys\[0\]\.id must be 1 to 32 letters/],
  ['a key id too long', { keys: [{ id: 'k'.repeat(33), secret: SECRET }] }, /keys\[0\]\.id must be 1 to 32/],
  ['a secret of 31 bytes', { keys: [{ id: 'k1', secret: SECRET.slice(1) }] }, /keys\[0\] \("k1"\) has a 31-byte secret; use at least 32/],
  ['31 raw bytes', { keys: [{ id: 'k1', secret: new Uint8Array(31) }] }, /has a 31-byte secret/],
  ['a secret that is a number', { keys: [{ id: 'k1', secret: 12 }] }, /secret must be a string or a Uint8Array/],
  ['the same id twice', { keys: [{ id: 'k1', secret: SECRET }, { id: 'k1', secret: OTHER }] }, /the id "k1" is given twice/],
  ['the same secret under two ids (string and bytes)', { keys: [{ id: 'k1', secret: SECRET }, { id: 'k2', secret: Buffer.from(SECRET) }] }, /"k2" has the same secret as "k1"/],
  ['an unknown option', { keys: [{ id: 'k1', secret: SECRET }], maxAge: 5 }, /unknown signedContext option\(s\) maxAge/],
  ['a ttl under a second', { keys: [{ id: 'k1', secret: SECRET }], ttl: 999 }, /ttl must be a whole number of milliseconds from 1000/],
  ['a fractional ttl', { keys: [{ id: 'k1', secret: SECRET }], ttl: 1500.5 }, /ttl must be a whole number/],
  ['a ttl over a day', { keys: [{ id: 'k1', secret: SECRET }], ttl: 86_400_001 }, /ttl must be a whole number/],
  ['a ttl as a string', { keys: [{ id: 'k1', secret: SECRET }], ttl: '10s' }, /ttl must be a whole number/]
]

for (const [name, option, message] of refused) {
  t.test(`refused: ${name}`, async (t) => {
    const error = t.throws(() => validateSignedContext(option), { code: 'FST_TENANT_RLS_INVALID_OPTION', message }) as Error | undefined
    t.notMatch(error?.message ?? '', SECRET.slice(1, 20), 'the message never carries the secret')
  })
}

t.test('the signature: v1.<key id>.<expiry>.<HMAC-SHA256 hex> over version, key id, pid, expiry and tenant', async (t) => {
  const key = validateSignedContext({ keys: [{ id: 'k1', secret: SECRET }] }).signingKey
  const claim = { key, tenantId: '5f0c3c8e-2f9b-4b7e-9d1a-0c2b7a1e4d11', backendPid: 4242, expiresAt: 1_900_000_000_000 }
  const signed = signTenantContext(claim)
  const mac = createHmac('sha256', SECRET).update(`fastify-tenant-rls/v1\nk1\n4242\n1900000000000\n${claim.tenantId}`).digest('hex')
  t.same(signed, { name: SIGNATURE_SETTING, value: `v1.k1.1900000000000.${mac}` })
  t.equal(SIGNATURE_SETTING, 'tenant_rls.signature')

  // Each bound field changes the MAC.
  const variants = [
    signTenantContext({ ...claim, tenantId: '5f0c3c8e-2f9b-4b7e-9d1a-0c2b7a1e4d12' }),
    signTenantContext({ ...claim, backendPid: 4243 }),
    signTenantContext({ ...claim, expiresAt: claim.expiresAt + 1 }),
    signTenantContext({ ...claim, key: validateSignedContext({ keys: [{ id: 'k1', secret: OTHER }] }).signingKey })
  ]
  t.equal(new Set([signed.value, ...variants.map((variant) => variant.value)].map((value) => value.slice(-64))).size, 5)
})

t.test('the signer refuses a pid or an expiry that could never verify', async (t) => {
  const key = validateSignedContext({ keys: [{ id: 'k1', secret: SECRET }] }).signingKey
  const claim = { key, tenantId: 'acme', backendPid: 4242, expiresAt: 1_900_000_000_000 }
  for (const backendPid of [0, -1, 1.5, Number.NaN]) t.throws(() => signTenantContext({ ...claim, backendPid }), TypeError, `pid ${backendPid}`)
  for (const expiresAt of [0, 1.5, Number.POSITIVE_INFINITY]) t.throws(() => signTenantContext({ ...claim, expiresAt }), TypeError, `expiry ${expiresAt}`)
})

t.test('createTenantTable refuses a signedContext that is not a boolean', async (t) => {
  const { createTenantTable } = await import('fastify-tenant-rls/schema')
  const { pgTable, uuid } = await import('drizzle-orm/pg-core')
  const tenants = pgTable('tenants', { id: uuid('id').primaryKey() })
  t.throws(() => createTenantTable({ tenants: tenants.id, signedContext: 'yes' as unknown as boolean }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /signedContext must be true or false, got "yes"/ })
})
