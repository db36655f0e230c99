// The Fastify side: decorators and hook wiring. No SQL here; every transaction statement lives in
// tenant-transaction.ts.
//
// One tenant-scoped request:
//   onRequest  verify the JWT (401), resolve the tenant (403); nothing else is allocated.
//   handler    first use of request.db creates the TenantTransaction; its first query takes a
//              connection and opens the transaction.
//   onError    roll back at once, and keep database details out of the reply.
//   onSend     status < 400 and no error: commit (a failed commit becomes the reply); else roll back.
//   res close  safety net for every path that skips onSend (disconnect, timeout, hijack).
//   onClose    roll back whatever is still open, so the pool can be ended.
import type {} from '@fastify/jwt'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { NoTenantContextError, UnauthenticatedError } from './errors.js'
import { presentDatabaseError } from './error-presentation.js'
import { resolveOptions } from './options.js'
import { checkPoolRole } from './safety-checks.js'
import { createDatabaseFactory } from './tenant-database.js'
import type { TenantDatabase } from './tenant-database.js'
import { resolveTenantId } from './tenant-resolution.js'
import { TenantTransaction } from './tenant-transaction.js'
import { runWithTenant } from './with-tenant.js'

const kTenant = Symbol('fastify-tenant-rls.tenant')
const kReply = Symbol('fastify-tenant-rls.reply')
const kTransaction = Symbol('fastify-tenant-rls.transaction')
const kDatabase = Symbol('fastify-tenant-rls.database')
const kSettled = Symbol('fastify-tenant-rls.settled')

interface TenantRequestState {
  /** The verified tenant; private, so route code cannot change the tenant a transaction opens for. */
  [kTenant]: string | null
  [kReply]: FastifyReply | null
  /** Created on first use of request.db: a route that never touches it allocates nothing. */
  [kTransaction]: TenantTransaction | null
  [kDatabase]: TenantDatabase<Record<string, unknown>> | null
  /** Set once the reply is decided (onSend or onError): no transaction may begin after that. */
  [kSettled]: boolean
}

function stateOf (request: FastifyRequest): TenantRequestState {
  return request as unknown as TenantRequestState
}

function isTenantScoped (request: FastifyRequest): boolean {
  // Unmatched URLs have nothing to protect; the not-found handler runs without a tenant.
  return request.routeOptions.config.tenant !== false && !request.is404
}

export async function fastifyTenantRls (fastify: FastifyInstance, rawOptions: unknown): Promise<void> {
  const options = resolveOptions(rawOptions)
  const createDatabase = createDatabaseFactory(options.schema)
  // Transactions holding a connection, so app.close() can roll them back before the pool ends.
  const live = new Set<TenantTransaction>()
  // The pool's role as checked by onReady, which Fastify runs before serving any request.
  let expectedRole: string | undefined

  fastify.decorateRequest(kTenant, null)
  fastify.decorateRequest(kReply, null)
  fastify.decorateRequest(kTransaction, null)
  fastify.decorateRequest(kDatabase, null)
  fastify.decorateRequest(kSettled, false)
  fastify.decorateRequest('tenantId', {
    getter (this: FastifyRequest) {
      return stateOf(this)[kTenant]
    }
  })
  fastify.decorateRequest('db', {
    getter (this: FastifyRequest) {
      const state = stateOf(this)
      // Built on first use: a route that never touches request.db pays for no drizzle object.
      state[kDatabase] ??= createDatabase(transactionOf(state))
      return state[kDatabase] as unknown as TenantDatabase
    }
  })

  function transactionOf (state: TenantRequestState): TenantTransaction {
    if (state[kTransaction] !== null) return state[kTransaction]
    const tenantId = state[kTenant]
    const reply = state[kReply]
    if (tenantId === null || reply === null) throw new NoTenantContextError()
    const transaction = new TenantTransaction(options.pool, tenantId, options.setting, {
      expectedRole,
      lockTimeout: options.lockTimeout,
      onDiscard (reason) {
        // The route left something on its session: worth a look, as the next tenant never sees it.
        reply.log.warn({ route: reply.request.routeOptions.url, reason }, 'fastify-tenant-rls: connection discarded, route code left session state on it')
      },
      onOpen (transaction) {
        live.add(transaction)
        // 'close' fires on every way a response ends, including those that skip onSend.
        reply.raw.once('close', () => { transaction.rollback().catch(() => {}) })
      },
      onFinish (transaction) {
        live.delete(transaction)
      }
    })
    // After the reply is decided, a first use gets a handle that refuses every query.
    if (state[kSettled]) transaction.rollback().catch(() => {})
    state[kTransaction] = transaction
    return transaction
  }

  fastify.decorate('withTenant', function withTenant<TResult> (tenantId: string, work: (db: TenantDatabase) => Promise<TResult>) {
    return runWithTenant(options.pool, options.setting, createDatabase, tenantId, work, () => expectedRole, {
      lockTimeout: options.lockTimeout,
      onDiscard (reason) {
        fastify.log.warn({ tenantId, reason }, 'fastify-tenant-rls: connection discarded, withTenant work left session state on it')
      },
      track (transaction) {
        live.add(transaction)
        return () => live.delete(transaction)
      }
    })
  })

  fastify.addHook('onReady', async function refuseUnsafeRole () {
    // Every transaction opened from now on must run as this role, the one just checked.
    expectedRole = await checkPoolRole(options.pool)
  })

  fastify.addHook('onRequest', async function authenticateTenant (request: FastifyRequest, reply: FastifyReply) {
    if (!isTenantScoped(request)) return
    try {
      await request.jwtVerify()
    } catch (error) {
      throw new UnauthenticatedError((error as Error).message, { cause: error })
    }
    const tenantId = await resolveTenantId(request, options)
    const state = stateOf(request)
    state[kTenant] = tenantId
    state[kReply] = reply
    request.log = request.log.child({ tenantId })
    reply.log = request.log
  })

  fastify.addHook('onError', async function rollBackFailedRequest (request: FastifyRequest, _reply: FastifyReply, error: Error) {
    presentDatabaseError(error)
    const state = stateOf(request)
    // Rolled back here, and any later first use refused: by onSend, a failed request has no
    // transaction left to commit.
    state[kSettled] = true
    await state[kTransaction]?.rollback()
  })

  // Callback style, so that the common case (no transaction, or one never opened) allocates no promise.
  fastify.addHook('onSend', function finishTenantTransaction (request, reply, payload, done) {
    const state = stateOf(request)
    state[kSettled] = true
    const transaction = state[kTransaction]
    if (transaction === null || transaction.finished) return done(null, payload)
    if (!transaction.opened) {
      // Nothing was sent: this finishes synchronously, and refuses any later use of request.db.
      transaction.rollback().catch(() => {})
      return done(null, payload)
    }
    // Before the response is written: a failed commit becomes the reply, never a 2xx.
    const finishing = reply.statusCode < 400 ? transaction.commit() : transaction.rollback()
    finishing.then(() => done(null, payload), done)
  })

  fastify.addHook('onClose', async function rollBackInFlightTransactions () {
    await Promise.all([...live].map((transaction) => transaction.rollback()))
  })
}
