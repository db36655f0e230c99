// The public surface of fastify-tenant-rls: the plugin, withTenant, the types and the errors.
import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import type { FastifyTenantRlsOptions } from './options.js'
import { fastifyTenantRls } from './plugin.js'
import type { TenantDatabase } from './tenant-database.js'

export type { FastifyTenantRlsOptions, TenantResolver } from './options.js'
export type { PublicRouteCandidate, PublicRoutesOptions } from './public-routes.js'
export type { RegisteredSchema, TenantDatabase, TenantRlsRegister } from './tenant-database.js'
export type { TenantWork, WithTenantOptions } from './with-tenant.js'
export { withTenant } from './with-tenant.js'
export { normalizeTenantId } from './tenant-id.js'
// The startup check's facts without the throw: problems it refuses, warnings only a superuser can fix.
export { inspectPoolRole } from './safety-checks.js'
export type { RoleInspection, RoleProblem } from './safety-checks.js'
export { HARMLESS_STORED_SETTINGS, HARMLESS_STORED_SETTING_PREFIXES } from './stored-settings.js'
// Observability: the diagnostics_channel names and event shapes, and the startup check's policy warning.
export { DIAGNOSTICS_CHANNELS } from './diagnostics.js'
export type { PoolFigures, TransactionFinishEvent, TransactionOpenEvent, TransactionQueryEvent } from './diagnostics.js'
export { inspectPolicySetting } from './safety-checks.js'
export type { SettingWarning } from './safety-checks.js'
export * as errors from './errors.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The verified tenant of this request (canonical UUID); null on opted-out, public and out-of-scope routes. Read-only. */
    readonly tenantId: string | null
    /**
     * drizzle database bound to this request's tenant transaction, typed from your registered schema.
     * Throws FST_TENANT_RLS_NO_TENANT_CONTEXT on opted-out, public and out-of-scope routes.
     */
    readonly db: TenantDatabase
  }
  interface FastifyInstance {
    /** Runs `work` in a transaction scoped to `tenantId`: commit on resolve, roll back on throw. */
    withTenant<TResult>(tenantId: string, work: (db: TenantDatabase) => Promise<TResult>): Promise<TResult>
  }
  interface FastifyContextConfig {
    /** `false` opts a route out: no token check, no tenant, no transaction (health checks, login). */
    tenant?: boolean
  }
}

/** The plugin: register it after @fastify/jwt. */
const plugin: FastifyPluginAsync<FastifyTenantRlsOptions> = fp(fastifyTenantRls as FastifyPluginAsync<FastifyTenantRlsOptions>, {
  fastify: '5.x',
  name: 'fastify-tenant-rls',
  dependencies: ['@fastify/jwt']
})

export default plugin
export { plugin as fastifyTenantRls }
