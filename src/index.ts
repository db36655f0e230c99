// The public surface of fastify-tenant-rls: the plugin, withTenant, the types and the errors.
import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import type { FastifyTenantRlsOptions } from './options.js'
import { fastifyTenantRls } from './plugin.js'
import type { TenantDatabase, TenantRequestDatabase } from './tenant-database.js'
import type { TenantRouteOptions } from './transaction-mode.js'
import type { WithTenantCallOptions } from './with-tenant.js'
import type { Accountability } from './elevated/accountability.js'

export type { FastifyTenantRlsOptions, FastifyTenantRlsSettings, RequestVerifier, TenantPoolSource, TenantResolver } from './options.js'
export type { OwnedPoolConfig } from './owned-pool.js'
export type { RegisteredSchema, TenantDatabase, TenantRequestDatabase, TenantRlsRegister } from './tenant-database.js'
export type { TenantWork, WithTenantCallOptions, WithTenantOptions } from './with-tenant.js'
export type { Accountability } from './elevated/accountability.js'
export type { IsolationLevel, PlanCacheMode, ReadOnlyDefault, TenantRouteOptions } from './transaction-mode.js'
export type { SettingsResolver, TransactionSettings } from './transaction-settings.js'
export type { PublicRouteCandidate, PublicRoutesOptions } from './public-routes.js'
export { withTenant } from './with-tenant.js'
export { normalizeTenantId } from './tenant-id.js'
export type { TenantIdType } from './tenant-id.js'
// The startup check's facts without the throw: problems it refuses, warnings only a superuser can fix.
export { inspectPoolRole } from './safety-checks.js'
export type { RoleInspection, RoleProblem } from './safety-checks.js'
export { HARMLESS_STORED_SETTINGS, HARMLESS_STORED_SETTING_PREFIXES } from './stored-settings.js'
// Observability: the diagnostics_channel names and event shapes, and the startup check's policy warning.
export { DIAGNOSTICS_CHANNELS } from './diagnostics.js'
export type { PoolFigures, TransactionFinishEvent, TransactionOpenEvent, TransactionQueryEvent } from './diagnostics.js'
export { inspectPolicySetting } from './safety-checks.js'
export type { SettingWarning } from './safety-checks.js'
// Signed tenant context: the option's types, and the startup check's facts without the throw.
export type { SignedContextOptions, SigningKey } from './signed-context/options.js'
export type { TenantStatusOptions } from './tenant-status/options.js'
export type { TenantRoute } from './routing/tenant-router.js'
export { inspectSignedContext } from './signed-context/inspection.js'
export type { SignedContextInspection, SignedContextProblem } from './signed-context/inspection.js'
export * as errors from './errors.js'
// Tenant lifecycle: export, import, checksums, erasure. Each call takes the pool that holds the tenant.
export { exportTenant, tenantChecksums } from './lifecycle/export.js'
export type { ExportTenantOptions, TenantChecksums } from './lifecycle/export.js'
export { importTenant } from './lifecycle/import.js'
export type { ImportResult, ImportTenantOptions } from './lifecycle/import.js'
export { eraseTenant, inspectTenantErasure } from './lifecycle/erase.js'
export type { EraseTenantOptions, ErasureOptions, ErasureReport } from './lifecycle/erase.js'
export type { ExportedTable, ExportManifest } from './lifecycle/export-file.js'
export type { LifecycleProgress, LifecycleProgressHandler, TenantScopeOptions } from './lifecycle/tenant-scope.js'
export type { TableRows } from './lifecycle/tenant-tables.js'
export type { LifecycleAuditEvent, LifecycleAuditHook } from './lifecycle/audit-hook.js'
// Routing by a placement table, and moving a tenant from one database to another.
export { placementRouting } from './routing/placement.js'
export type { MoveStep, PlacementRouting, PlacementRoutingOptions } from './routing/placement.js'
export { DEFAULT_DRAIN_MS, moveTenant } from './routing/move-tenant.js'
export type { MoveDatabase, MoveReport, MoveTenantOptions } from './routing/move-tenant.js'
// Citus: how the opening sets the tenant (the openWith option), and the check that pairs with it.
export type { OpenWith } from './citus/set-local.js'
export { inspectCitusOpening } from './citus/detection.js'
export type { CitusOpeningWarning } from './citus/detection.js'

declare module 'fastify' {
  // `request.db`, or the decorator name registered in TenantRlsRegister (see TenantRequestDatabase).
  interface FastifyRequest extends TenantRequestDatabase {
    /** The verified tenant of this request, in canonical form (a lower-case UUID by default); null on opted-out, public and out-of-scope routes. Read-only. */
    readonly tenantId: string | null
  }
  interface FastifyInstance {
    /** Runs `work` in a transaction scoped to `tenantId`: commit on resolve, roll back on throw. */
    withTenant<TResult>(tenantId: string, work: (db: TenantDatabase) => Promise<TResult>, options?: WithTenantCallOptions): Promise<TResult>
    /**
     * Runs `work` as an audited system job on the `systemPool` option's pool: one transaction that
     * sees every tenant. `actor` and `reason` are required. See `withSystem` in `fastify-tenant-rls/elevated`.
     */
    withSystem<TResult>(accountability: Accountability, work: (db: TenantDatabase) => Promise<TResult>): Promise<TResult>
  }
  interface FastifyContextConfig {
    /**
     * `false` opts a route out: no token check, no tenant, no transaction (health checks, login).
     * An object sets the route's transaction options over the plugin's: `{ readOnly: true }`.
     */
    tenant?: boolean | TenantRouteOptions
  }
}

/**
 * The plugin: register it after @fastify/jwt, or give it `verify`. No static dependency on
 * @fastify/jwt: with `verify` it is not needed, and register checks the verifier it will call.
 */
const plugin: FastifyPluginAsync<FastifyTenantRlsOptions> = fp(fastifyTenantRls as FastifyPluginAsync<FastifyTenantRlsOptions>, {
  fastify: '5.x',
  name: 'fastify-tenant-rls'
})

export default plugin
export { plugin as fastifyTenantRls }
