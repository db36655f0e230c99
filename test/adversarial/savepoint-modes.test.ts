// A careless route author asks for a read-only (or serializable, or deferrable) nested transaction
// and writes inside it. Inside request.db (and a withTenant db) a nested transaction is a savepoint,
// which cannot apply any of those modes; drizzle would drop them silently and the writes the caller
// believed read-only would be committed. Each case asserts what was really committed, read back
// through the admin pool, and that the connection went back to the pool.
import type { ExtractTablesWithRelations } from 'drizzle-orm'
import type { NodePgQueryResultHKT } from 'drizzle-orm/node-postgres'
import type { PgDatabase, PgTransactionConfig } from 'drizzle-orm/pg-core'
import type { FastifyRequest } from 'fastify'
import t from 'tap'
import { bearer, buildApp, committedNames, projects, projectsWorld } from '../helpers/fixture.js'

const { db, pool, tenantA } = await projectsWorld(t, 1)

const CODE = 'FST_TENANT_RLS_TRANSACTION_CONFIG_UNSUPPORTED'

// request.db's own type takes no config (drizzle 0.45 declares none on a nested transaction); code
// that holds it as a PgDatabase, as shared repository functions do, can still pass one.
type AnyDatabase = PgDatabase<NodePgQueryResultHKT, Record<string, never>, ExtractTablesWithRelations<Record<string, never>>>

/** Writes `name` in a nested transaction opened with `config`, after a write outside it. */
async function writeInNested (database: AnyDatabase, tenantId: string, name: string, config?: PgTransactionConfig): Promise<void> {
  await database.insert(projects).values({ tenantId, name: `${name}-outside` })
  await database.transaction(async (tx) => { await tx.insert(projects).values({ tenantId, name }) }, config)
}

const refused: Array<[string, PgTransactionConfig, string]> = [
  ['accessMode read only', { accessMode: 'read only' }, 'accessMode'],
  ['accessMode read write', { accessMode: 'read write' }, 'accessMode'],
  ['isolationLevel serializable', { isolationLevel: 'serializable' }, 'isolationLevel'],
  ['deferrable false', { deferrable: false }, 'deferrable'],
  ['all three', { isolationLevel: 'repeatable read', accessMode: 'read only', deferrable: true }, 'isolationLevel, accessMode, deferrable']
]

t.test('a request whose nested transaction asks for a mode is refused and commits nothing', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/nested/:index', async (request: FastifyRequest<{ Params: { index: string } }>) => {
        const [, config] = refused[Number(request.params.index)] ?? []
        await writeInNested(request.db, String(request.tenantId), 'inside', config)
        return { ok: true }
      })
    }
  })
  const headers = bearer(app, { tenant_id: tenantA })
  for (const [index, [name, , modes]] of refused.entries()) {
    const res = await app.inject({ method: 'POST', url: `/nested/${index}`, headers })
    t.equal(res.statusCode, 500, name)
    t.equal(res.json().code, CODE, name)
    t.match(res.json().message, modes, `${name}: the message names what cannot be applied`)
    t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], `${name}: neither the write outside nor the one inside was committed`)
  }
})

t.test('the refusal holds at every depth: a config on a transaction nested in a savepoint', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/deep', async (request) => {
        const tenantId = String(request.tenantId)
        await request.db.transaction(async (outer) => {
          await outer.transaction(async (middle) => {
            await writeInNested(middle, tenantId, 'deep', { accessMode: 'read only' })
          })
        })
        return { ok: true }
      })
    }
  })
  const res = await app.inject({ method: 'POST', url: '/deep', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, CODE)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
})

t.test('a config that asks for nothing ({} or modes left undefined) nests as a plain savepoint and commits', async (t) => {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/empty', async (request) => {
        const tenantId = String(request.tenantId)
        await writeInNested(request.db, tenantId, 'empty', {})
        await request.db.transaction(async (outer) => {
          await writeInNested(outer, tenantId, 'undefined', { isolationLevel: undefined as unknown as 'serializable' })
        })
        return { ok: true }
      })
    }
  })
  const res = await app.inject({ method: 'POST', url: '/empty', headers: bearer(app, { tenant_id: tenantA }) })
  t.equal(res.statusCode, 200)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'empty', 'empty-outside', 'undefined', 'undefined-outside'])
})

t.test('withTenant refuses the same config and commits nothing', async (t) => {
  const app = await buildApp(t, { pool })
  const work = app.withTenant(tenantA, (database) => writeInNested(database, tenantA, 'job', { accessMode: 'read only' }))
  await t.rejects(work, { code: CODE, statusCode: 500 })
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
})
