// The lifecycle jobs on tables whose policies verify a signed tenant context (createSignedWorld):
// given the plugin's signedContext they sign their transaction and see the tenant's rows; without
// it they see none, as any unsigned transaction does; a key the database does not hold is refused.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { exportTenant, importTenant, tenantChecksums } from 'fastify-tenant-rls'
import { installSigningKey, removeSigningKey } from 'fastify-tenant-rls/schema'
import type { CliIo } from '../src/cli/command.js'
import { SIGNING_KEY_ENV } from '../src/cli/signing-options.js'
import { runCli } from '../src/cli/run-cli.js'
import { createSignedWorld, newKey, NOTES_PER_TENANT } from './helpers/signed-context.js'

const world = await createSignedWorld(t)
const { db } = world
const pool = db.appPool()
// The plain table is signed-context-sql.test.ts's control; signed mode refuses a role that can use it.
await db.asOwner(`REVOKE ALL ON plain_notes FROM ${db.appRole}`)
const scope = { pool, tenantId: world.a, tables: ['signed_notes'] }
const rowsOf = async (options: Parameters<typeof tenantChecksums>[0]): Promise<number[]> => (await tenantChecksums(options)).tables.map((table) => table.rows)

t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })

t.test('signed: the job sees the tenant\'s rows; unsigned it sees none; a key the database does not hold is refused', async (t) => {
  t.same(await rowsOf({ ...scope, signedContext: { keys: [world.key] } }), [NOTES_PER_TENANT])
  t.same(await rowsOf(scope), [0], 'unsigned: the signed policy shows nothing')
  // The signed-context check, as withTenant runs it: otherwise the job would see nothing and an
  // export would be an empty file that looks like a success.
  await t.rejects(rowsOf({ ...scope, signedContext: { keys: [newKey('unknown')] } }), { code: 'FST_TENANT_RLS_UNSAFE_ROLE', message: /does not accept signatures made with the signing key "unknown"/ })
})

t.test('an export and an import in signed mode carry every row back', async (t) => {
  const folder = await mkdtemp(join(tmpdir(), 'signed-export-'))
  t.teardown(() => rm(folder, { recursive: true, force: true }))
  const signedContext = { keys: [world.key] }
  const manifest = await exportTenant({ ...scope, signedContext, out: join(folder, 'a.export') })
  t.same(manifest.tables.map((table) => table.rows), [NOTES_PER_TENANT])
  const result = await importTenant({ pool, from: join(folder, 'a.export'), replace: true, signedContext })
  t.same(result.tables.map((table) => table.rows), [NOTES_PER_TENANT])
  t.same(await rowsOf({ ...scope, signedContext }), [NOTES_PER_TENANT])
})

t.test('a bad signedContext is refused before any connection', async (t) => {
  await t.rejects(tenantChecksums({ ...scope, signedContext: { keys: [{ id: 'bad id', secret: 'x'.repeat(40) }] } }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
})

t.test('the CLI signs with --signing-key-id and the secret from the environment, and refuses half of the pair', async (t) => {
  const folder = await mkdtemp(join(tmpdir(), 'signed-cli-'))
  const key = { id: 'cli', secret: randomBytes(32).toString('hex') }
  await installSigningKey(world.ownerPool, key)
  t.teardown(async () => {
    delete process.env[SIGNING_KEY_ENV]
    await removeSigningKey(world.ownerPool, key.id)
    await rm(folder, { recursive: true, force: true })
  })
  const run = async (args: string[], secret?: string): Promise<{ code: number, out: string, err: string }> => {
    if (secret === undefined) delete process.env[SIGNING_KEY_ENV]
    else process.env[SIGNING_KEY_ENV] = secret
    let out = ''
    let err = ''
    const io: CliIo = { stdout: { write: (chunk: string) => { out += chunk } }, stderr: { write: (chunk: string) => { err += chunk } }, stdoutIsTty: false, stderrIsTty: false }
    const code = await runCli([...args, '--database-url', db.url(), '--format', 'json'], io)
    return { code, out, err }
  }
  const exportArgs = (file: string): string[] => ['export', '--tenant', world.a, '--table', 'signed_notes', '--out', join(folder, file)]
  const rowsIn = (out: string): number[] => (JSON.parse(out) as { tables: Array<{ rows: number }> }).tables.map((table) => table.rows)

  const signed = await run([...exportArgs('signed.export'), '--signing-key-id', key.id], key.secret)
  t.equal(signed.code, 0, signed.err)
  t.same(rowsIn(signed.out), [NOTES_PER_TENANT], 'signed: every row of the tenant')
  const unsigned = await run(exportArgs('unsigned.export'))
  t.same(rowsIn(unsigned.out), [0], 'unsigned: the signed policy shows nothing')

  const noSecret = await run([...exportArgs('x.export'), '--signing-key-id', key.id])
  t.equal(noSecret.code, 2)
  t.match(noSecret.err, `--signing-key-id cli needs the key's secret in ${SIGNING_KEY_ENV}`)
  const noId = await run(exportArgs('y.export'), key.secret)
  t.equal(noId.code, 2)
  t.match(noId.err, `${SIGNING_KEY_ENV} is set: give --signing-key-id`)
  const short = await run([...exportArgs('z.export'), '--signing-key-id', key.id], 'too short')
  t.equal(short.code, 2, 'a secret the plugin would refuse is a usage error')

  const imported = await run(['import', join(folder, 'signed.export'), '--replace', '--signing-key-id', key.id], key.secret)
  t.equal(imported.code, 0, imported.err)
  t.same(rowsIn(imported.out), [NOTES_PER_TENANT], 'the import writes every row back through the signed policy')
  t.same(await rowsOf({ ...scope, signedContext: { keys: [world.key] } }), [NOTES_PER_TENANT])
})
