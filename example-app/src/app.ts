// Builds the example API: @fastify/jwt, fastify-tenant-rls in signed mode on the app role's pool, the routes.
// The server (server.ts) and the tests both build it here.
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import fastifyTenantRls from 'fastify-tenant-rls'
import type { SignedContextOptions } from 'fastify-tenant-rls'
import type pg from 'pg'
import { ELEVATED_TABLES } from './database.js'
import { registerMetrics } from './metrics.js'
import type { MetricsOptions } from './metrics.js'
import { projectRoutes } from './routes/projects.js'
import { taskRoutes } from './routes/tasks.js'
import * as schema from './schema.js'

/** Options of `buildApp`. */
export interface ExampleAppOptions {
  /** Pool of the login role (a member of the example_app role), with connectionTimeoutMillis set. */
  pool: pg.Pool
  /** HS256 secret the tokens are signed with. */
  jwtSecret: string
  /**
   * Pool of the system role (database.ts SYSTEM_ROLE), with connectionTimeoutMillis set: enables
   * app.withSystem (the usage job) and support impersonation, whose requests it records in the
   * audit trail. Without it a token with an actor claim is refused.
   */
  systemPool?: pg.Pool
  /** The signed tenant context's keys (context-keys.ts): the policies trust no tenant without its signature. */
  signedContext: SignedContextOptions
  /** Fastify's own options (logger, ...). */
  fastify?: FastifyServerOptions
  /** GET /metrics: how many tenants get a label of their own (see metrics.ts). */
  metrics?: MetricsOptions
}

/** The example API, ready to listen or inject. */
export async function buildApp (options: ExampleAppOptions): Promise<FastifyInstance> {
  const app = Fastify(options.fastify ?? {})
  await app.register(fastifyJwt, { secret: options.jwtSecret })
  // The tenant comes from the token's tenant_id claim, a support operator from its act.sub claim
  // (the plugin's defaults).
  await app.register(fastifyTenantRls, {
    pool: options.pool,
    schema,
    signedContext: options.signedContext,
    ...ELEVATED_TABLES,
    ...(options.systemPool === undefined ? {} : { systemPool: options.systemPool })
  })
  registerMetrics(app, options.metrics)
  app.get('/health', { config: { tenant: false }, schema: { response: { 200: { type: 'object', properties: { ok: { type: 'boolean' } } } } } }, async function health () {
    return { ok: true }
  })
  // Fastify 5 lets a keep-alive connection that goes idle after close() began stay open until its
  // keepAliveTimeout (72 s) ends, and close() waits for it (fastify issue 7044). So the answers to
  // requests still in flight at shutdown tell the client to close the connection.
  let closing = false
  app.addHook('preClose', async function stopKeepAlive () { closing = true })
  app.addHook('onSend', async function closeConnectionWhenClosing (_request, reply, payload) {
    if (closing) reply.header('connection', 'close')
    return payload
  })
  await app.register(projectRoutes)
  await app.register(taskRoutes)
  await app.ready()
  return app
}
