// Two PostgreSQL servers for the move tests: "shared" (which also holds the placement table) and
// "whale", both with the lifecycle tables, the tenants table's status column, and an app pool;
// an app routing by the placement table; and a request loop that keeps asking for one tenant's
// rows through app.inject while a move runs, recording every answer.
import { randomUUID } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import { sql } from 'drizzle-orm'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import type pg from 'pg'
import type { Test } from 'tap'
import fastifyTenantRls, { placementRouting } from 'fastify-tenant-rls'
import { placementTableSql } from 'fastify-tenant-rls/schema'
import type { FastifyTenantRlsSettings, MoveDatabase, MoveTenantOptions } from 'fastify-tenant-rls'
import { tenantStatusSql } from 'fastify-tenant-rls/schema'
import { createTestDatabase } from './database.js'
import type { TestDatabase } from './database.js'
import { JWT_SECRET } from './fixture.js'
import { createLifecycleTables, seedTenant } from './lifecycle-world.js'

export interface MoveWorld {
  shared: TestDatabase
  whale: TestDatabase
  sharedPool: pg.Pool
  whalePool: pg.Pool
  /** The placement table's reader (the app role, on the shared server). */
  directoryPool: pg.Pool
  source: MoveDatabase
  target: MoveDatabase
  /** The test file's directory for a move's files (and any other export the test writes). */
  directory: string
  /** Seeds a tenant on `db` with `bulk` projects (two tasks each) and places it there. */
  placeTenant (db: TestDatabase, bulk: number): Promise<string>
  /** moveTenant's options for a move from shared to whale: placement on shared, no drain. */
  moveOptions (tenantId: string, extra?: Partial<MoveTenantOptions>): MoveTenantOptions
  /** Throws unless both app pools have every connection back (for `t.afterEach`). */
  assertNoLeaks (t: Test): Promise<void>
}

async function prepare (db: TestDatabase): Promise<void> {
  await createLifecycleTables(db)
  await db.asOwner(tenantStatusSql({ appRole: db.appRole, table: 'public.tenants' }))
}

export async function moveWorld (t: Test): Promise<MoveWorld> {
  const shared = await createTestDatabase(t)
  const whale = await createTestDatabase(t)
  await prepare(shared)
  await prepare(whale)
  await shared.asOwner(placementTableSql({ readerRole: shared.appRole }))
  const sharedPool = shared.appPool()
  const whalePool = whale.appPool()
  const source = { name: 'shared', appPool: sharedPool, adminPool: shared.admin }
  const target = { name: 'whale', appPool: whalePool, adminPool: whale.admin }
  const directory = t.testdir()
  return {
    shared,
    whale,
    sharedPool,
    whalePool,
    directoryPool: shared.appPool({ max: 2 }),
    source,
    target,
    directory,
    async placeTenant (db, bulk) {
      const tenantId = randomUUID()
      await seedTenant(db, tenantId, bulk)
      await shared.admin.query('INSERT INTO tenant_placements (tenant, database) VALUES ($1, $2)', [tenantId, db === shared ? 'shared' : 'whale'])
      return tenantId
    },
    moveOptions (tenantId, extra = {}) {
      return { tenantId, source, target, placement: { pool: shared.admin }, directory, drainMs: 0, ...extra }
    },
    async assertNoLeaks (t) {
      await shared.assertNoLeaks(t, sharedPool)
      await whale.assertNoLeaks(t, whalePool)
    }
  }
}

/** An app routing by the placement table, with GET /rows answering the tenant's projects (tenant and id). */
export async function placementApp (t: Test, world: MoveWorld, options: Partial<FastifyTenantRlsSettings> = {}): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(fastifyJwt, { secret: JWT_SECRET })
  await app.register(fastifyTenantRls, {
    pool: world.sharedPool,
    ...placementRouting({ pool: world.directoryPool, pools: { shared: world.sharedPool, whale: world.whalePool } }),
    tenantStatus: { table: 'public.tenants', retryAfter: 2 },
    ...options
  })
  app.get('/rows', async (request) => (await request.db.execute(sql`SELECT tenant_id, id FROM projects ORDER BY id`)).rows)
  t.teardown(() => app.close())
  await app.ready()
  return app
}

/** One answer of GET /rows. */
export interface Answer {
  status: number
  code: string | undefined
  retryAfter: string | undefined
  rows: number
  /** Rows of any tenant but the one asked for. */
  foreign: number
}

export async function askRows (app: FastifyInstance, tenantId: string): Promise<Answer> {
  const res = await app.inject({ url: '/rows', headers: { authorization: `Bearer ${app.jwt.sign({ tenant_id: tenantId })}` } })
  const body = res.json() as Array<{ tenant_id: string }> | { code?: string }
  const rows = Array.isArray(body) ? body : []
  return {
    status: res.statusCode,
    code: Array.isArray(body) ? undefined : body.code,
    retryAfter: res.headers['retry-after'] as string | undefined,
    rows: rows.length,
    foreign: rows.filter((row) => row.tenant_id !== tenantId).length
  }
}

/** Requests for one tenant, one after another, until stopped; `fresh()` waits for a request begun after the call to finish. */
export interface RequestLoop {
  answers: Answer[]
  fresh (): Promise<void>
  stop (): Promise<void>
}

export function requestLoop (app: FastifyInstance, tenantId: string): RequestLoop {
  const answers: Answer[] = []
  const state = { stopped: false }
  let begun = 0
  let waiters: Array<{ after: number, open: () => void }> = []
  const running = (async () => {
    while (!state.stopped) {
      const number = ++begun
      answers.push(await askRows(app, tenantId))
      const ready = waiters.filter((waiter) => waiter.after < number)
      waiters = waiters.filter((waiter) => waiter.after >= number)
      for (const waiter of ready) waiter.open()
    }
  })()
  return {
    answers,
    fresh () {
      return new Promise((resolve) => { waiters.push({ after: begun, open: resolve }) })
    },
    async stop () {
      state.stopped = true
      await running
    }
  }
}
