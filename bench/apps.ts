// Builds the applications the benchmark compares: the plugin (once per variant in targets.ts) and
// the baselines B0-B4, each a Fastify app with @fastify/jwt (every app verifies the same token and
// takes the tenant from it), each with its own pool of the same size. Nothing here measures; it
// only serves.
import fastifyJwt from '@fastify/jwt'
import fastifyPostgres from '@fastify/postgres'
import { sql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'
import { drizzle as drizzleOnPostgresJs } from 'drizzle-orm/postgres-js'
import Fastify from 'fastify'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import pg from 'pg'
import type { PoolConfig } from 'pg'
import fastifyTenantRls from 'fastify-tenant-rls'
import postgres from 'postgres'
import type { SocketWatch } from './socket-traffic.js'
import { PLUGIN_VARIANTS } from './targets.js'
import type { AppName } from './targets.js'
import { items, newestItems, postItem, threeDependentQueries } from './workloads.js'

export interface AppSettings {
  appUrl: string
  manualUrl: string
  /** The signed role's URL, for variants in signed mode (its only policy on items is the signed one). */
  signedUrl: string
  /** The system role's URL, for variants with elevated access configured (`systemPool`). */
  systemUrl: string
  jwtSecret: string
  poolSize: number
}

export interface BenchApp {
  name: AppName
  app: FastifyInstance
}

/** Told about each app as it is built, before any request or connection: where counting starts. */
export interface AppObserver {
  pool (name: AppName, pool: pg.Pool): void
  /** For a postgres.js client, which has no pool events: sockets whose traffic is counted for `name`. */
  sockets (name: AppName): SocketWatch['socket']
  served (name: AppName): void
}

const W1_BY_HAND = 'SELECT id, created_at, title, amount FROM items WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 20'

function poolConfig (settings: AppSettings, connectionString: string): PoolConfig {
  return { connectionString, max: settings.poolSize, idleTimeoutMillis: 0, connectionTimeoutMillis: 5000 }
}

function amountFrom (request: FastifyRequest): number {
  return Number((request.body as { amount?: unknown } | undefined)?.amount ?? 1)
}

async function withJwt (name: AppName, settings: AppSettings, observer: AppObserver): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  app.addHook('onResponse', async function countServed () { observer.served(name) })
  await app.register(fastifyJwt, { secret: settings.jwtSecret })
  return app
}

/** A baseline verifies the token itself and reads the tenant from it, as the plugin does. */
async function baseline (name: AppName, settings: AppSettings, observer: AppObserver): Promise<{ app: FastifyInstance, tenantOf: (request: FastifyRequest) => string }> {
  const app = await withJwt(name, settings, observer)
  app.addHook('onRequest', async function verifyToken (request) { await request.jwtVerify() })
  return { app, tenantOf: (request) => String((request.user as { tenant_id?: unknown }).tenant_id) }
}

async function pluginApp (variant: typeof PLUGIN_VARIANTS[number], settings: AppSettings, observer: AppObserver): Promise<BenchApp> {
  const name = variant.app
  const app = await withJwt(name, settings, observer)
  const signed = 'signedContext' in variant.settings
  const pool = new pg.Pool(poolConfig(settings, signed ? settings.signedUrl : settings.appUrl))
  observer.pool(name, pool)
  // Not observed: no request of the variant uses it, and its check at ready is not a request's.
  const systemPool = 'systemPool' in variant ? new pg.Pool(poolConfig(settings, settings.systemUrl)) : undefined
  await app.register(fastifyTenantRls, { ...variant.settings, pool, schema: { items }, ...(systemPool === undefined ? {} : { systemPool }) })
  const options = { config: { tenant: variant.route } }
  app.get('/w1', options, async (request) => newestItems(request.db))
  app.get('/w1p', options, async (request) => newestItems(request.db).prepare('w1').execute())
  app.post('/w2', options, async (request) => postItem(request.db, String(request.tenantId), amountFrom(request)))
  app.get('/w3', options, async (request) => ({ tenant: request.tenantId }))
  app.get('/w4', options, async (request) => threeDependentQueries(request.db))
  app.addHook('onClose', async () => { await pool.end(); await systemPool?.end() })
  return { name, app }
}

async function plainFastify (settings: AppSettings, observer: AppObserver): Promise<BenchApp> {
  const { app, tenantOf } = await baseline('b0', settings, observer)
  app.get('/w3', async (request) => ({ tenant: tenantOf(request) }))
  return { name: 'b0', app }
}

async function rawPg (settings: AppSettings, observer: AppObserver): Promise<BenchApp> {
  const { app, tenantOf } = await baseline('b1', settings, observer)
  const pool = new pg.Pool(poolConfig(settings, settings.manualUrl))
  observer.pool('b1', pool)
  app.get('/w1', async (request) => (await pool.query({ name: 'b1_w1', text: W1_BY_HAND, values: [tenantOf(request)] })).rows)
  app.addHook('onClose', async () => { await pool.end() })
  return { name: 'b1', app }
}

async function drizzleOnPool (settings: AppSettings, observer: AppObserver): Promise<BenchApp> {
  const { app, tenantOf } = await baseline('b2', settings, observer)
  const pool = new pg.Pool(poolConfig(settings, settings.manualUrl))
  observer.pool('b2', pool)
  const db = drizzle(pool)
  const prepared = newestItems(db, sql.placeholder('tenant')).prepare('b2_w1')
  app.get('/w1', async (request) => newestItems(db, tenantOf(request)))
  app.get('/w1p', async (request) => prepared.execute({ tenant: tenantOf(request) }))
  app.post('/w2', async (request) => postItem(db, tenantOf(request), amountFrom(request)))
  app.get('/w4', async (request) => threeDependentQueries(db, tenantOf(request)))
  app.addHook('onClose', async () => { await pool.end() })
  return { name: 'b2', app }
}

async function fastifyPostgresTransact (settings: AppSettings, observer: AppObserver): Promise<BenchApp> {
  const { app, tenantOf } = await baseline('b3', settings, observer)
  await app.register(fastifyPostgres, poolConfig(settings, settings.manualUrl))
  observer.pool('b3', app.pg.pool)
  // @fastify/postgres wraps routes registered after it; drizzle is bound to the request's client.
  const transact = { pg: { transact: true } }
  const db = (request: FastifyRequest) => drizzle(request.pg as unknown as pg.PoolClient)
  app.get('/w1', transact, async (request) => newestItems(db(request), tenantOf(request)))
  app.post('/w2', transact, async (request) => postItem(db(request), tenantOf(request), amountFrom(request)))
  app.get('/w4', transact, async (request) => threeDependentQueries(db(request), tenantOf(request)))
  return { name: 'b3', app }
}

// drizzle sends each query through postgres.js's unsafe() with `prepare: false` unless the route
// called .prepare(), whereas postgres.js prepares its own tagged-template queries by default (each
// distinct text becomes a named statement on each connection, parsed once there). This gives
// drizzle's queries postgres.js's default, which is the baseline the comparison is after. It saves
// the parsing, not the planning: drizzle binds W1's LIMIT as a parameter, and PostgreSQL keeps
// choosing a custom plan for it (pg_prepared_statements: custom_plans only).
function preparingEveryQuery (client: postgres.Sql): postgres.Sql {
  const unsafe: postgres.Sql['unsafe'] = (text, parameters, options) => client.unsafe(text, parameters, { ...options, prepare: true })
  return new Proxy(client, {
    get: (target, key, receiver) => key === 'unsafe' ? unsafe : Reflect.get(target, key, receiver)
  })
}

async function drizzleOnPostgresJsAutoPrepared (settings: AppSettings, observer: AppObserver): Promise<BenchApp> {
  const { app, tenantOf } = await baseline('b4', settings, observer)
  const client = postgres(settings.manualUrl, {
    max: settings.poolSize,
    connect_timeout: 5,
    onnotice: () => {},
    // Documented in postgres.js's README ("Custom socket"), not in its types.
    ...{ socket: observer.sockets('b4') }
  })
  const db = drizzleOnPostgresJs(preparingEveryQuery(client))
  app.get('/w1', async (request) => newestItems(db, tenantOf(request)))
  app.post('/w2', async (request) => postItem(db, tenantOf(request), amountFrom(request)))
  app.get('/w4', async (request) => threeDependentQueries(db, tenantOf(request)))
  app.addHook('onClose', async () => { await client.end() })
  return { name: 'b4', app }
}

/** Builds every application, ready to listen. */
export async function buildApps (settings: AppSettings, observer: AppObserver): Promise<BenchApp[]> {
  const builders = [
    ...PLUGIN_VARIANTS.map((variant) => (given: AppSettings, watcher: AppObserver) => pluginApp(variant, given, watcher)),
    plainFastify, rawPg, drizzleOnPool, fastifyPostgresTransact, drizzleOnPostgresJsAutoPrepared
  ]
  const apps = await Promise.all(builders.map((build) => build(settings, observer)))
  await Promise.all(apps.map(({ app }) => app.ready()))
  return apps
}
