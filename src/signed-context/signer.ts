// Signs a tenant context: the value the opening sets, beside the tenant setting, so that the
// database (tenant_rls.current_tenant()) can tell the plugin's context from one route SQL wrote.
// Pure (node:crypto only, no I/O), so a request pays one HMAC-SHA256 over a few dozen bytes.
//
// The signature binds four things, each closing one way to reuse it:
// - the tenant: a route that sets another tenant beside it gets NULL (no rows, no writes);
// - the backend pid: a signature read on one connection is worthless on any other;
// - the expiry (milliseconds since the epoch, checked against the database clock at the start
//   of the transaction): a signature that leaks is worthless on its own connection soon after;
// - the key id: which key the database verifies with, so keys rotate without downtime.
// Value: `v1.<key id>.<expiry>.<HMAC as 64 hex digits>`; the pid and the tenant are not repeated,
// the database takes them from pg_backend_pid() and the tenant setting. The MAC is over
// `fastify-tenant-rls/v1 LF key id LF pid LF expiry LF tenant` (UTF-8): every field before the
// tenant is free of line feeds, and the tenant comes last, so no two contexts share a message.
// schema-sql.ts builds the same message in SQL; a change here is a change there.
import { createHmac } from 'node:crypto'
import type { ResolvedSigningKey } from './options.js'

/** The transaction-local setting that carries the signature (set with set_config(..., true)). */
export const SIGNATURE_SETTING = 'tenant_rls.signature'

/** Version tag of the signature format, first in the value and in the signed message. */
export const SIGNATURE_VERSION = 'v1'

/** What `signTenantContext` signs. */
export interface TenantContextClaim {
  /** The signing key (`ResolvedSignedContext.signingKey`). */
  key: ResolvedSigningKey
  /** The tenant, exactly as the opening sets it in the tenant setting (canonical form). */
  tenantId: string
  /** The PostgreSQL backend pid of the connection that will open the transaction. */
  backendPid: number
  /** Milliseconds since the epoch after which the signature opens no transaction. */
  expiresAt: number
}

/** A setting for the opening to set with `set_config(name, value, true)`, both as bound parameters. */
export interface SignedSetting {
  name: string
  value: string
}

// The message the MAC covers; the view verified_tenant (schema-sql.ts) builds the same bytes.
function signedMessage (keyId: string, backendPid: number, expiresAt: number, tenantId: string): string {
  return `fastify-tenant-rls/${SIGNATURE_VERSION}\n${keyId}\n${backendPid}\n${expiresAt}\n${tenantId}`
}

/**
 * Signs `tenantId` for one backend until `expiresAt`. The caller checks nothing else: a pid or an
 * expiry that is not a positive whole number throws, since it could never verify.
 */
export function signTenantContext ({ key, tenantId, backendPid, expiresAt }: TenantContextClaim): SignedSetting {
  if (!Number.isSafeInteger(backendPid) || backendPid <= 0) throw new TypeError(`backendPid must be a positive integer, got ${String(backendPid)}`)
  if (!Number.isSafeInteger(expiresAt) || expiresAt <= 0) throw new TypeError(`expiresAt must be milliseconds since the epoch, got ${String(expiresAt)}`)
  const mac = createHmac('sha256', key.secret).update(signedMessage(key.id, backendPid, expiresAt, tenantId), 'utf8').digest('hex')
  return { name: SIGNATURE_SETTING, value: `${SIGNATURE_VERSION}.${key.id}.${expiresAt}.${mac}` }
}
