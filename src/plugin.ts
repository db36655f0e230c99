// The Fastify side: decorators and hook wiring. No SQL here; every transaction statement lives in
// tenant-transaction.ts.
//
// One tenant-scoped request (public routes, decided once per route, skip all of it):
//   onRequest  verify the JWT or run `verify` (401), resolve the tenant (403) and its extra settings;
//              nothing else is allocated.
//   handler    first use of request.db creates the TenantTransaction; its first query takes a
//              connection and opens the transaction.
//   onError    roll back at once, and keep database details out of the reply.
//   onSend     the route's last hook, after every other onSend hook of the app, its contexts, the
//              route and other plugins: status < 400: commit (a failed commit becomes the reply);
//              else roll back. Nothing that runs later can turn a committed request into an error.
//   res close  safety net for every path that skips onSend (disconnect, timeout, hijack).
//   onClose    roll back whatever is still open, so the pool can be ended (by the plugin when it
//              created it from connectionString).
import type { FastifyInstance, FastifyReply, FastifyRequest, onSendHookHandler, RouteOptions } from 'fastify'
import { createAuthenticator } from './authentication.js'
import { explainConnectionFailure } from './connection-failure.js'
import { InvalidOptionError, NoTenantContextError } from './errors.js'
import { presentDatabaseError } from './error-presentation.js'
import { rootOf, runOnSendHookLast } from './fastify-internals.js'
import { resolveOptions } from './options.js'
import { unwritableReplyError } from './reply-writability.js'
import { createPoolExhaustionLog } from './pool-exhaustion.js'
import { auditRegisteredTables } from './audit/startup-audit.js'
import { checkPoolRole, describeRoleProblem, inspectPolicySetting } from './safety-checks.js'
import { checkSignedContext, describeSignedContextProblem } from './signed-context/inspection.js'
import { createDatabaseFactory } from './tenant-database.js'
import type { TenantDatabase } from './tenant-database.js'
import { readClaim, resolveTenantId } from './tenant-resolution.js'
import { TenantTransaction } from './tenant-transaction.js'
import { TenantRouter } from './routing/tenant-router.js'
import type { Placement } from './routing/tenant-router.js'
import { routedPoolChecker } from './routing/pool-check.js'
import { normalizeTenantId } from './tenant-id.js'
import type { Queryable } from './tenant-transaction.js'
import { resolveRouteMode, transactionModeFor } from './transaction-mode.js'
import type { RouteMode, TransactionMode } from './transaction-mode.js'
import { resolveSettings } from './transaction-settings.js'
import type { SettingPairs } from './transaction-settings.js'
import { checkedPool, runWithTenant, withTenantCallOptions } from './with-tenant.js'
import { refuseSingleRoundTripRoute } from './citus/set-local.js'
import { inspectCitusOpening } from './citus/detection.js'
import { checkAccountability } from './elevated/accountability.js'
import type { Accountability } from './elevated/accountability.js'
import { checkedSystemRole, checkSystemRole, rememberSystemRole } from './elevated/system-role.js'
import { runWithSystem } from './elevated/with-system.js'
import { actorOf, admissionCheck, auditBeforeReply, noteStatements } from './elevated/impersonation.js'
import type { Impersonation } from './elevated/impersonation.js'
import type { WithTenantCallOptions } from './with-tenant.js'

const kState = Symbol('fastify-tenant-rls.state')
const kFinishedByRoute = Symbol('fastify-tenant-rls.finished-by-route')
const kPublicRoute = Symbol('fastify-tenant-rls.public-route')
const kRouteMode = Symbol('fastify-tenant-rls.route-mode')

/** Set by onRequest once the tenant is verified; absent on public, opted-out and unmatched routes. */
interface TenantRequestState {
  /** The verified tenant; private, so route code cannot change the tenant a transaction opens for. */
  readonly tenantId: string
  readonly reply: FastifyReply
  /** The route carries the plugin's own onSend hook (added at onRoute), so the instance's stands aside. */
  readonly finishedByRoute: boolean
  /** The extra settings the `settings` option returned for this request (null without the option). */
  settings: SettingPairs | null
  /** The registration that verified the request builds its handle (its pool, its schema). */
  readonly openDatabase: (request: FastifyRequest, state: TenantRequestState) => TenantDatabase<Record<string, unknown>>
  /** Created on first use of request.db: a route that never touches it allocates nothing. */
  transaction: TenantTransaction | null
  database: TenantDatabase<Record<string, unknown>> | null
  /** Set once the reply is decided (onSend or onError): no transaction may begin after that. */
  settled: boolean
  /** The token names an actor: a support operator acting as the tenant (elevated/impersonation.ts). */
  readonly impersonation: Impersonation | null
  /** The tenant's pool and its checked role, with the route option; undefined: the plugin's pool. */
  readonly placement: Placement | undefined
}

/** What onRoute adds to the config of every route it sees. */
interface RouteMark {
  [kFinishedByRoute]?: true
  /** Decided once per route: public routes skip authentication entirely. */
  [kPublicRoute]?: boolean
  /** The route's transaction options over the plugin's, validated when the route was added. */
  [kRouteMode]?: RouteMode | undefined
}

type RequestWithState = Record<typeof kState, TenantRequestState | null | undefined>

function stateOf (request: FastifyRequest): TenantRequestState | null {
  // Contexts created before the plugin copied the request defaults without ours: undefined there.
  return (request as unknown as RequestWithState)[kState] ?? null
}

function tenantIdOf (this: FastifyRequest): string | null {
  return stateOf(this)?.tenantId ?? null
}

function databaseOf (this: FastifyRequest): TenantDatabase {
  const state = stateOf(this)
  // Public, opted-out and out-of-scope routes: a clear error, never an undefined typed as present.
  if (state === null) throw new NoTenantContextError()
  // Built on first use: a route that never touches request.db pays for no drizzle object.
  state.database ??= state.openDatabase(this, state)
  return state.database as unknown as TenantDatabase
}

/** The database decorator names this plugin has put on each app's root. */
const decoratedApps = new WeakMap<FastifyInstance, Set<string>>()

// On the root, once per app and name, so every route has request.db (or the configured name),
// whichever context it was declared in and whenever; state lives on the request, so one pair of
// getters serves every registration.
function decorateEveryRequest (fastify: FastifyInstance, decorator: string): void {
  const root = rootOf(fastify)
  let names = decoratedApps.get(root)
  if (names === undefined) {
    names = new Set()
    decoratedApps.set(root, names)
    root.decorateRequest(kState, null)
    root.decorateRequest('tenantId', { getter: tenantIdOf })
  }
  if (names.has(decorator)) return
  // Fastify's own collision error would not say which option avoids it.
  if (fastify.hasRequestDecorator(decorator) || root.hasRequestDecorator(decorator)) {
    throw new InvalidOptionError(`request.${decorator} is already taken (by another plugin, Fastify itself or request.tenantId); set the decorator option to a free name, e.g. decorator: 'tenantDb'`)
  }
  root.decorateRequest(decorator, { getter: databaseOf })
  names.add(decorator)
}

/** Route-level onSend hooks, as an array, whichever of the accepted shapes the route used. */
function onSendHooksOf (routeOptions: RouteOptions): onSendHookHandler[] {
  const hooks = routeOptions.onSend
  if (hooks === undefined || hooks === null) return []
  return Array.isArray(hooks) ? hooks : [hooks]
}

export async function fastifyTenantRls (fastify: FastifyInstance, rawOptions: unknown): Promise<void> {
  const options = resolveOptions(rawOptions)
  const authenticate = createAuthenticator(fastify, options)
  const createDatabase = createDatabaseFactory(options.schema)
  // Transactions holding a connection, so app.close() can roll them back before the pool ends.
  const live = new Set<TenantTransaction>()
  // The pool's role as checked by onReady, which Fastify runs before serving any request.
  let expectedRole: string | undefined
  const poolExhaustion = createPoolExhaustionLog(options.pool)
  if (options.ownsPool) {
    // Without a listener, an idle connection the server drops would crash the process.
    options.pool.on('error', function warnIdleConnectionFailed (error) {
      fastify.log.warn({ err: error }, 'fastify-tenant-rls: an idle connection of the plugin\'s pool failed; the pool replaces it on demand')
    })
  }

  decorateEveryRequest(fastify, options.decorator)

  const route = options.route
  const router = route === undefined ? undefined : new TenantRouter(route, routedPoolChecker(options), options.routeCacheMs)

  function openDatabase (request: FastifyRequest, state: TenantRequestState): TenantDatabase<Record<string, unknown>> {
    const queryable = warningWhenRefused(request, transactionOf(state))
    return createDatabase(state.impersonation === null ? queryable : noteStatements(state.impersonation, queryable))
  }

  // Routes onRoute never saw (declared before the plugin): decided on their first request, once.
  const verdictsOfUnseenRoutes = new WeakMap<object, boolean>()
  function isPublicUnseenRoute (request: FastifyRequest): boolean {
    const route = request.routeOptions
    let verdict = verdictsOfUnseenRoutes.get(route.config)
    if (verdict === undefined) {
      verdict = options.isPublicRoute({ method: route.method, url: route.url ?? '' })
      verdictsOfUnseenRoutes.set(route.config, verdict)
    }
    return verdict
  }

  // A query on a finished transaction is refused. After the reply (route code that replies first
  // and writes afterwards) nobody would hear of it: the client has its answer and route code often
  // does not await such work. The log is where the route author can find it.
  function warningWhenRefused (request: FastifyRequest, transaction: TenantTransaction): Queryable {
    function warnRefusedQuery (error: { code?: unknown }): never {
      request.log.warn({ method: request.method, url: request.routeOptions.url, code: error.code },
        'request.db was used after the request transaction had finished; the query was refused (use app.withTenant for work after the reply)')
      throw error
    }
    return {
      query (config, values) {
        const result = transaction.query(config, values)
        // Only the late path pays for the extra promise.
        return transaction.finished ? result.catch(warnRefusedQuery) : result
      }
    }
  }

  function transactionOf (state: TenantRequestState): TenantTransaction {
    if (state.transaction !== null) return state.transaction
    const reply = state.reply
    const transaction = new TenantTransaction(state.placement?.pool ?? options.pool, state.tenantId, options.setting, {
      ...transactionModeOf(reply.request),
      settings: state.settings ?? undefined,
      preparedStatements: options.preparedStatements,
      preparedRouteQueries: options.preparedRouteQueries,
      signedContext: options.signedContext,
      tenantStatus: options.tenantStatus,
      openWith: options.openWith,
      tenantIdType: options.tenantIdType,
      expectedRole: state.placement?.role ?? expectedRole,
      admission: state.impersonation === null ? undefined : admissionCheck(state.impersonation, options.grantsTable, reply.log),
      onDiscard (reason) {
        // The route left something on its session: worth a look, as the next tenant never sees it.
        reply.log.warn({ route: reply.request.routeOptions.url, reason }, 'fastify-tenant-rls: connection discarded, route code left session state on it')
      },
      onOpen (transaction) {
        live.add(transaction)
        poolExhaustion.connected(reply.log)
        // 'close' fires on every way a response ends, including those that skip onSend.
        reply.raw.once('close', () => { transaction.rollback('response closed').catch(() => {}) })
      },
      onFinish (transaction) {
        live.delete(transaction)
      }
    })
    // After the reply is decided, a first use gets a handle that refuses every query.
    if (state.settled) transaction.rollback().catch(() => {})
    state.transaction = transaction
    return transaction
  }

  // Routes onRoute never saw (registered before the plugin) are resolved here, on each transaction.
  function transactionModeOf (request: FastifyRequest): TransactionMode {
    const config: RouteMark & typeof request.routeOptions.config = request.routeOptions.config
    const mode = config[kRouteMode] ?? resolveRouteMode(config.tenant, options.routeMode, `${request.method} ${request.routeOptions.url}`)
    return transactionModeFor(mode, request.method)
  }

  // async: a bad per-call option rejects, like every other failure of withTenant, rather than throwing.
  fastify.decorate('withTenant', async function withTenant<TResult> (tenantId: string, work: (db: TenantDatabase) => Promise<TResult>, callOptions?: WithTenantCallOptions) {
    // Routed only once the id is valid (runWithTenant refuses it otherwise): a bad id never reaches route.
    const canonical = router === undefined ? null : normalizeTenantId(tenantId, options.tenantIdType)
    const placement = canonical === null ? undefined : await router?.placementOf(canonical)
    // Before app.ready() the startup check has not run: check the pool now (its role, and in signed
    // mode what the database's verifier needs), as the standalone withTenant does.
    return runWithTenant(placement?.pool ?? options.pool, options.setting, createDatabase, tenantId, work, () => placement?.role ?? expectedRole ?? checkedPool(options.pool, options.setting, options.signedContext), {
      ...withTenantCallOptions(callOptions, options.routeMode, options.setting),
      tenantIdType: options.tenantIdType,
      preparedStatements: options.preparedStatements,
      preparedRouteQueries: options.preparedRouteQueries,
      signedContext: options.signedContext,
      tenantStatus: options.tenantStatus,
      openWith: options.openWith,
      onDiscard (reason) {
        fastify.log.warn({ tenantId, reason }, 'fastify-tenant-rls: connection discarded, withTenant work left session state on it')
      },
      track (transaction) {
        live.add(transaction)
        return () => live.delete(transaction)
      }
    })
  })

  // Always decorated, so the type is the same with or without the option; without it, a clear refusal.
  fastify.decorate('withSystem', async function withSystem<TResult> (accountability: Accountability, work: (db: TenantDatabase) => Promise<TResult>) {
    const who = checkAccountability(accountability)
    const systemPool = options.systemPool
    if (systemPool === undefined) throw new InvalidOptionError('app.withSystem needs the systemPool option: a pg.Pool of the dedicated system role')
    // Before app.ready() the pool has not been checked with the app role known: checked on its own now.
    return runWithSystem(systemPool, who, work, createDatabase, options.auditTable, () => checkedSystemRole(systemPool))
  })

  fastify.addHook('onReady', async function refuseUnsafeRole () {
    // Every transaction opened from now on must run as this role, the one just checked.
    expectedRole = await checkPoolRole(options.pool, function warnAboutSharedRole (warning) {
      fastify.log.warn({ role: warning.role, fix: warning.fix }, describeRoleProblem(warning))
    }).catch(explainConnectionFailure)
    if (options.signedContext !== undefined) {
      // Signed policies read the tenant through the verifying function, not the setting: this check
      // replaces the one below, and refuses what the mode cannot trust.
      await checkSignedContext(options.pool, options.signedContext, options.setting, function warnAboutSignedContext (warning) {
        fastify.log.warn({ fix: warning.fix }, `fastify-tenant-rls: ${describeSignedContextProblem(warning)}`)
      })
    } else {
      const unread = await inspectPolicySetting(options.pool, options.setting)
      if (unread !== undefined) fastify.log.warn({ setting: unread.setting, fix: unread.fix }, `fastify-tenant-rls: ${unread.problem}; fix: ${unread.fix}`)
    }
    if (options.schema !== undefined) {
      await auditRegisteredTables(options.pool, {
        schema: options.schema,
        setting: options.setting,
        tenantIdType: options.tenantIdType,
        signedContext: options.signedContext !== undefined,
        role: expectedRole,
        mode: options.startupAudit,
        onFinding: (finding) => { fastify.log.warn({ rule: finding.rule, object: finding.object, fix: finding.fix }, `fastify-tenant-rls: ${finding.rule} ${finding.object}: ${finding.message}`) }
      })
    }
    await options.tenantStatus?.verify(options.pool)
    const citus = await inspectCitusOpening(options.pool, options.openWith)
    if (citus !== undefined) fastify.log.warn({ fix: citus.fix }, `fastify-tenant-rls: ${citus.problem}; fix: ${citus.fix}`)
    // The pools route may return, held to the role (and signed-context) check of the pool above.
    if (router !== undefined) await Promise.all(options.routedPools.map((pool) => router.check(pool))).catch(explainConnectionFailure)
    // With the app role known, so membership and sameness are checked against it too.
    if (options.systemPool !== undefined) rememberSystemRole(options.systemPool, await checkSystemRole(options.systemPool, expectedRole).catch(explainConnectionFailure))
  })

  // Route-level hooks run after every hook of the instance chain, so a hook added here finishes the
  // transaction after the onSend hooks of the app, of child contexts and of the route itself.
  fastify.addHook('onRoute', function finishAfterEveryOnSendHook (routeOptions) {
    const config = routeOptions.config
    const open = config?.tenant === false || options.isPublicRoute({ method: routeOptions.method, url: routeOptions.url })
    // Read in onRequest (where the route config is read anyway) so the instance hook stands aside.
    // The route's transaction options are checked now: a wrong one fails the route's registration.
    const mode = open ? undefined : resolveRouteMode(config?.tenant, options.routeMode, `${String(routeOptions.method)} ${routeOptions.url}`)
    if (mode !== undefined) refuseSingleRoundTripRoute(options.openWith, mode.singleRoundTrip, `${String(routeOptions.method)} ${routeOptions.url}`)
    const marked: RouteMark & typeof config = { ...config, [kFinishedByRoute]: true, [kPublicRoute]: open, [kRouteMode]: mode }
    routeOptions.config = marked
    if (open) return
    // Other plugins' onRoute hooks run after this one and may append onSend hooks of their own.
    // Fastify reads a route's hooks only when the app gets ready, after every after() callback, so
    // placing the hook here puts it last once all onRoute hooks have run. No parameter: avvio then
    // passes a registration error on instead of handing it to this callback.
    this.after(function placeFinishLast () {
      const others = onSendHooksOf(routeOptions).filter((hook) => hook !== finishTenantTransaction)
      routeOptions.onSend = [...others, finishTenantTransaction]
    })
  })

  fastify.addHook('onRequest', async function authenticateTenant (request: FastifyRequest, reply: FastifyReply) {
    const config: RouteMark & typeof request.routeOptions.config = request.routeOptions.config
    // Unmatched URLs have nothing to protect; the not-found handler runs without a tenant.
    if (request.is404 || config.tenant === false || (config[kPublicRoute] ?? isPublicUnseenRoute(request))) return
    const claims = await authenticate(request)
    const tenantId = await resolveTenantId(request, claims, options)
    const operator = actorOf(claims, (given) => readClaim(given, options.actorClaimPath), options.systemPool)
    const impersonation: Impersonation | null = operator === undefined ? null : { operator, tenantId, outcome: 'unchecked', admission: null, recorded: false, statements: [] }
    const finishedByRoute = config[kFinishedByRoute] === true
    // Declared before the plugin: the instance hook must still run after the route's own onSend hooks.
    if (!finishedByRoute) runOnSendHookLast(request, finishRouteRegisteredEarlier.name)
    const placement = router === undefined ? undefined : await router.placementOf(tenantId)
    const state: TenantRequestState = { tenantId, reply, finishedByRoute, settings: null, openDatabase, transaction: null, database: null, settled: false, impersonation, placement }
    ;(request as unknown as RequestWithState)[kState] = state
    request.log = request.log.child({ tenantId })
    reply.log = request.log
    // Resolved with the tenant set (request.tenantId reads it), before the body is read: a request
    // its policies could not serve is refused here, holding nothing.
    if (options.settings !== undefined) state.settings = await resolveSettings(request, options.settings, options.setting)
  })

  fastify.addHook('onError', async function rollBackFailedRequest (request: FastifyRequest, _reply: FastifyReply, error: Error) {
    presentDatabaseError(error)
    const state = stateOf(request)
    if (state === null) return
    // Rolled back here, and any later first use refused: by onSend, a failed request has no
    // transaction left to commit.
    state.settled = true
    const code = (error as { code?: unknown }).code
    if (code === 'FST_TENANT_RLS_DATABASE_UNAVAILABLE') poolExhaustion.unavailable(request.log, error)
    await state.transaction?.rollback('error', typeof code === 'string' ? code : undefined)
  })

  // Routes that onRoute never saw (declared before the plugin, on the root or in a context created
  // earlier: Fastify adds instance hooks to existing contexts, not onRoute hooks) are finished by
  // the instance hook instead, which onRequest moves after the route's other onSend hooks.
  function finishRouteRegisteredEarlier (request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (error: Error | null, payload?: unknown) => void): void {
    const state = stateOf(request)
    if (state === null || state.finishedByRoute) return done(null, payload)
    finishTenantTransaction(request, reply, payload, done)
  }
  fastify.addHook('onSend', finishRouteRegisteredEarlier)

  // Callback style, so that the common case (no transaction, or one never opened) allocates no promise.
  function finishTenantTransaction (request: FastifyRequest, reply: FastifyReply, payload: unknown, finished: (error: Error | null, payload?: unknown) => void): void {
    const state = stateOf(request)
    if (state === null) return finished(null, payload)
    // An impersonated request's audit row goes in once the transaction has ended, before the reply.
    const done = state.impersonation === null || options.systemPool === undefined ? finished : auditBeforeReply(state.impersonation, request, reply, options.systemPool, options.auditTable, finished)
    state.settled = true
    const transaction = state.transaction
    if (transaction === null || transaction.finished) return done(null, payload)
    if (!transaction.opened) {
      // Nothing was sent: this finishes synchronously, and refuses any later use of request.db.
      transaction.rollback().catch(() => {})
      return done(null, payload)
    }
    // A reply Fastify or Node cannot write would fail after the commit: roll back instead.
    const unwritable = unwritableReplyError(reply, payload)
    // Before the response is written: a failed commit becomes the reply, never a 2xx.
    const finishing = reply.statusCode < 400 && unwritable === undefined
      ? transaction.commit()
      : transaction.rollback(unwritable === undefined ? 'error status' : 'unwritable reply')
    finishing.then(function writeReply () {
      if (unwritable !== undefined) return done(unwritable)
      // done() writes the response; what it throws would otherwise be an unhandled rejection and
      // a request that never ends. Fastify's own runner does the same for a promise-style hook.
      try {
        done(null, payload)
      } catch (error) {
        done(error as Error)
      }
    }, done)
  }

  fastify.addHook('onClose', async function rollBackInFlightTransactions () {
    await Promise.all([...live].map((transaction) => transaction.rollback('app closing')))
    // A pool the plugin created is the plugin's to end, and only now holds no connection.
    if (options.ownsPool) await options.pool.end()
  })
}
