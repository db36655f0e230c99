// The one place that relies on how Fastify builds its contexts, for the two things its public API
// cannot do for a plugin registered after some routes:
//   - reach the root instance, so that request.db exists (and throws) on every route of the app,
//     including routes outside the plugin's scope;
//   - put the commit after the route-level onSend hooks of a route declared before the plugin,
//     whose options onRoute never showed us.
// Surface used (fastify 5): a child context is `Object.create(parent)` (lib/plugin-override.js);
// a request holds its route context under the symbol described 'fastify.context', whose `onSend`
// is the array of bound hooks the onSend runner reads when the reply is sent (lib/route.js,
// lib/hooks.js). On every Fastify upgrade rerun test/registration-order.test.ts and
// test/adversarial/hook-order.test.ts: they fail if either assumption stops holding.
import type { FastifyInstance, FastifyRequest } from 'fastify'

/** The instance every context descends from (contexts inherit from their parent object). */
export function rootOf (instance: FastifyInstance): FastifyInstance {
  let current = instance
  for (;;) {
    const parent: unknown = Object.getPrototypeOf(current)
    if (parent === null || typeof (parent as Partial<FastifyInstance>).decorateRequest !== 'function') return current
    current = parent as FastifyInstance
  }
}

let routeContextKey: symbol | undefined

interface RouteContext {
  onSend: Array<(...args: never[]) => unknown> | null
}

function routeContextOf (request: FastifyRequest): RouteContext | undefined {
  routeContextKey ??= Object.getOwnPropertySymbols(request).find((key) => key.description === 'fastify.context')
  if (routeContextKey === undefined) return undefined
  return (request as unknown as Record<symbol, RouteContext | undefined>)[routeContextKey]
}

/**
 * Moves the onSend hook named `name` (Fastify binds hooks, so only the name identifies it) to the
 * end of the route's onSend hooks. Idempotent; the context is the route's, so the first request of
 * the route does it for all. The array is replaced, not changed in place: a request of the same
 * route already running its onSend hooks (a 401, say) keeps iterating its own, and skips none.
 * Should Fastify change shape, nothing moves and the commit runs where Fastify placed the hook:
 * still a commit or a rollback, never a leak (the tests above catch it).
 */
export function runOnSendHookLast (request: FastifyRequest, name: string): void {
  const context = routeContextOf(request)
  const hooks = context?.onSend
  if (context === undefined || !Array.isArray(hooks)) return
  const boundName = `bound ${name}`
  const index = hooks.findIndex((hook) => hook.name === boundName)
  if (index === -1 || index === hooks.length - 1) return
  const reordered = [...hooks]
  reordered.push(...reordered.splice(index, 1))
  context.onSend = reordered
}
