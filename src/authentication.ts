// Who sent the request: runs the verifier chosen at register time and returns the verified claims
// the tenant is read from, or throws a 401 whose message names the cause in fixed words. A
// verifier's own text never reaches the client (a JWKS lookup or a key that does not fit the
// algorithm can fail with library internals); it goes to the request log with the cause.
//
// The verifier is the app's own `verify` (sessions, API keys, another auth plugin) or the request
// method @fastify/jwt decorated, plain or under a namespace. Which one is settled against what is
// really decorated when the plugin registers, so a setup that cannot work fails `register`
// instead of answering 401 to every request.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { failOption, UnauthenticatedError } from './errors.js'
import type { RequestVerifier, ResolvedOptions } from './options.js'

/** Why a request is not authenticated; each cause has one fixed sentence for the client. */
type Cause = 'missing' | 'malformed' | 'expired' | 'inactive' | 'invalid' | 'rejected'

const MESSAGES: Readonly<Record<Cause, string>> = {
  missing: 'no credentials were sent',
  malformed: 'the token is malformed',
  expired: 'the token has expired',
  inactive: 'the token is not valid yet',
  invalid: 'the token signature or claims are invalid',
  rejected: 'the credentials were not accepted'
}

// The codes of @fastify/jwt (FST_JWT_*) and of fast-jwt beneath it (FAST_JWT_*, passed through
// unwrapped for some causes) that a client's token can cause. Any other failure is 'rejected' and
// logged at warn: it usually points at the server's own setup, not at the client.
const CAUSES: ReadonlyMap<string, Cause> = new Map([
  ['FST_JWT_NO_AUTHORIZATION_IN_HEADER', 'missing'],
  ['FST_JWT_NO_AUTHORIZATION_IN_COOKIE', 'missing'],
  ['FST_JWT_BAD_REQUEST', 'malformed'],
  ['FST_JWT_BAD_COOKIE_REQUEST', 'malformed'],
  ['FAST_JWT_MALFORMED', 'malformed'],
  ['FAST_JWT_INVALID_PAYLOAD', 'malformed'],
  ['FST_JWT_AUTHORIZATION_TOKEN_EXPIRED', 'expired'],
  ['FAST_JWT_EXPIRED', 'expired'],
  ['FAST_JWT_INACTIVE', 'inactive'],
  ['FST_JWT_AUTHORIZATION_TOKEN_INVALID', 'invalid'],
  ['FST_JWT_AUTHORIZATION_TOKEN_UNTRUSTED', 'invalid'],
  ['FAST_JWT_MISSING_SIGNATURE', 'invalid'],
  ['FAST_JWT_INVALID_SIGNATURE', 'invalid'],
  ['FAST_JWT_INVALID_ALGORITHM', 'invalid'],
  ['FAST_JWT_INVALID_CLAIM_VALUE', 'invalid'],
  ['FAST_JWT_MISSING_REQUIRED_CLAIM', 'invalid']
])

/** Verifies a request and returns its claims, or throws FST_TENANT_RLS_UNAUTHENTICATED. */
export type Authenticate = (request: FastifyRequest) => Promise<unknown>

function causeOf (error: unknown): Cause {
  const code = (error as { code?: unknown } | null)?.code
  return (typeof code === 'string' ? CAUSES.get(code) : undefined) ?? 'rejected'
}

// A `verify` that refuses with a 4xx of its own (an unknown API key) is a client's doing: info, not warn.
function isClientRefusal (error: unknown): boolean {
  const statusCode = (error as { statusCode?: unknown } | null)?.statusCode
  return typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500
}

function refuse (request: FastifyRequest, cause: Cause, error: unknown): Error {
  const expected = cause !== 'rejected' || isClientRefusal(error)
  request.log[expected ? 'info' : 'warn']({ cause, err: error }, 'fastify-tenant-rls: authentication failed')
  return new UnauthenticatedError(MESSAGES[cause], { cause: error })
}

function namespacesOf (fastify: FastifyInstance): string[] {
  const jwt = (fastify as unknown as { jwt?: Record<string, unknown> }).jwt
  // Without a namespace, fastify.jwt is the decorator itself (it has `verify`); with namespaces, an object of them.
  if (jwt === undefined || jwt === null || typeof jwt.verify === 'function') return []
  return Object.keys(jwt)
}

/** The @fastify/jwt request method to call, checked against what is decorated now (register time). */
function jwtVerifier (fastify: FastifyInstance, namespace: string | undefined): RequestVerifier {
  // @fastify/jwt names its method `${namespace}JwtVerify`; its `jwtVerify` option can rename it,
  // and then `verify: (request) => request.<name>()` is the way.
  const method = namespace === undefined ? 'jwtVerify' : `${namespace}JwtVerify`
  if (!fastify.hasRequestDecorator(method)) {
    const namespaces = namespacesOf(fastify)
    if (namespace !== undefined) {
      failOption(`jwtNamespace '${namespace}' has no request.${method}: register @fastify/jwt with namespace: '${namespace}' before fastify-tenant-rls` +
        `${namespaces.length > 0 ? ` (namespaces registered: ${namespaces.join(', ')})` : ''}, or pass verify: (request) => request.<its verify method>()`)
    }
    if (namespaces.length > 0) {
      failOption(`@fastify/jwt is registered with namespace(s) ${namespaces.join(', ')}, so request.jwtVerify does not exist: set jwtNamespace: '${namespaces[0]}' (or pass verify)`)
    }
    failOption('request.jwtVerify does not exist: register @fastify/jwt before fastify-tenant-rls, or pass verify: async (request) => claims to authenticate requests your own way')
  }
  const decodeMethod = namespace === undefined ? 'jwtDecode' : `${namespace}JwtDecode`
  const call = (request: FastifyRequest, name: string): Promise<unknown> =>
    ((request as unknown as Record<string, unknown>)[name] as () => Promise<unknown>).call(request)
  return async function verifyJwt (request) {
    try {
      // What @fastify/jwt stores on request.user (or its decoratorName), after formatUser.
      return await call(request, method)
    } catch (error) {
      // @fastify/jwt gives a token that does not even decode the code of a bad signature; decoding
      // it (on this failure path only) tells the client which of the two to fix.
      if ((error as { code?: unknown } | null)?.code !== 'FST_JWT_AUTHORIZATION_TOKEN_INVALID') throw error
      const decodes = await call(request, decodeMethod).then(() => true, () => false)
      throw decodes ? error : Object.assign(new Error('the token does not decode', { cause: error }), { code: 'FAST_JWT_MALFORMED' })
    }
  }
}

/** Chooses the verifier once, at register time; throws FST_TENANT_RLS_INVALID_OPTION if none can work. */
export function createAuthenticator (fastify: FastifyInstance, options: ResolvedOptions): Authenticate {
  const verify = options.verify ?? jwtVerifier(fastify, options.jwtNamespace)
  return async function authenticate (request) {
    let claims: unknown
    try {
      claims = await verify(request)
    } catch (error) {
      throw refuse(request, causeOf(error), error)
    }
    // Nothing verified is nobody: never a request without an identity.
    if (claims === undefined || claims === null) throw refuse(request, 'missing', new Error('the verifier returned no claims'))
    // Only claims are an identity: a `verify` answering true or false (a yes/no check) must not let
    // a request through to a resolveTenant that reads the tenant from somewhere the client controls.
    if (typeof claims !== 'object') throw refuse(request, 'rejected', new Error(`the verifier returned ${typeof claims}, not the request's claims`))
    return claims
  }
}
