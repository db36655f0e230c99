// The keys the example signs its tenant context with (the plugin's signedContext), from the
// environment: TENANT_CONTEXT_KEY (the secret, at least 32 bytes: `openssl rand -base64 48`) and
// TENANT_CONTEXT_KEY_ID. Without them the example falls back to a DEVELOPMENT key whose secret is
// printed in this file: fine for `npm start` on a laptop, worthless as protection anywhere else,
// which is why the server says so at every start.
import type { SigningKey } from 'fastify-tenant-rls'

/** The development fallback. Public (it is in the repository): never deploy with it. */
export const DEVELOPMENT_CONTEXT_KEY: SigningKey = {
  id: 'development',
  secret: 'DEVELOPMENT-ONLY tenant context key of the example app; set TENANT_CONTEXT_KEY'
}

/** The keys to sign with and to install, and whether they are the development fallback. */
export interface ContextKeys {
  keys: SigningKey[]
  development: boolean
}

/** Reads the signing key from `env`; the development key when TENANT_CONTEXT_KEY is unset or empty. */
export function contextKeysFrom (env: Record<string, string | undefined>): ContextKeys {
  const secret = env.TENANT_CONTEXT_KEY
  if (secret === undefined || secret === '') return { keys: [DEVELOPMENT_CONTEXT_KEY], development: true }
  return { keys: [{ id: env.TENANT_CONTEXT_KEY_ID ?? 'primary', secret }], development: false }
}
