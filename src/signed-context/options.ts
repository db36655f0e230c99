// The `signedContext` option: the keys the plugin signs the tenant context with, and how long a
// signature stays valid. Validated once, at register time; what comes out is ready for the signer
// (secrets as KeyObjects, so no request re-imports them).
import { createSecretKey } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { failOption } from '../errors.js'

/** One signing key: an id the database finds it by, and the secret both sides hold. */
export interface SigningKey {
  /** 1 to 32 letters, digits, `_` or `-`; travels in every signature, so it is not secret. */
  id: string
  /** At least 32 bytes: a string (its UTF-8 bytes) or raw bytes. The database gets the same bytes (`installSigningKey`). */
  secret: string | Uint8Array
}

/** Options of the signed tenant context mode (`signedContext`). */
export interface SignedContextOptions {
  /**
   * The keys, newest first: the first signs every transaction's context; the others are keys a
   * rotation is retiring, which the startup check reports once the database no longer accepts them.
   */
  keys: readonly SigningKey[]
  /**
   * How long a signature may open a transaction, in milliseconds, measured against the database
   * clock at the transaction's start. Covers the time from signing to BEGIN plus the clock skew
   * between this process and the database. Default 10000.
   */
  ttl?: number
}

/** A validated key, ready to sign with. */
export interface ResolvedSigningKey {
  id: string
  secret: KeyObject
}

/** `signedContext` after validation. */
export interface ResolvedSignedContext {
  /** The key every signature is made with (the first given). */
  signingKey: ResolvedSigningKey
  /** Every key given, the signing key first. */
  keys: readonly ResolvedSigningKey[]
  ttl: number
}

export const DEFAULT_SIGNATURE_TTL = 10_000
/** The shortest secret accepted: HMAC-SHA256 is no stronger than its key, and 32 bytes is its output size. */
export const MIN_SECRET_BYTES = 32
// One day: a signature is meant to open one transaction soon after it is made, not to be kept.
const MAX_SIGNATURE_TTL = 86_400_000
/** Key ids: also enforced by the key table, and free of the '.' that separates a signature's fields. */
const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/

function secretBytes (secret: unknown, index: number): Buffer {
  if (typeof secret === 'string') return Buffer.from(secret, 'utf8')
  if (secret instanceof Uint8Array) return Buffer.from(secret)
  return failOption(`signedContext.keys[${index}].secret must be a string or a Uint8Array of at least ${MIN_SECRET_BYTES} bytes, got ${typeof secret}`)
}

function validateKey (key: unknown, index: number): { id: string, bytes: Buffer } {
  if (key === null || typeof key !== 'object') failOption(`signedContext.keys[${index}] must be an object { id, secret }`)
  const { id, secret } = key as Record<string, unknown>
  if (typeof id !== 'string' || !KEY_ID.test(id)) {
    failOption(`signedContext.keys[${index}].id must be 1 to 32 letters, digits, _ or -, got ${JSON.stringify(id)}`)
  }
  const bytes = secretBytes(secret, index)
  // The message names the length, never the secret.
  if (bytes.length < MIN_SECRET_BYTES) {
    failOption(`signedContext.keys[${index}] ("${id}") has a ${bytes.length}-byte secret; use at least ${MIN_SECRET_BYTES} random bytes (for example: openssl rand -base64 48)`)
  }
  return { id, bytes }
}

function validateTtl (ttl: unknown): number {
  if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1000 || ttl > MAX_SIGNATURE_TTL) {
    failOption(`signedContext.ttl must be a whole number of milliseconds from 1000 to ${MAX_SIGNATURE_TTL}, got ${JSON.stringify(ttl)}`)
  }
  return ttl
}

/** Validates `signedContext` (register time): at least one key, ids and secrets each used once. */
export function validateSignedContext (signedContext: unknown): ResolvedSignedContext {
  if (signedContext === null || typeof signedContext !== 'object' || Array.isArray(signedContext)) {
    failOption('signedContext must be an object { keys: [{ id, secret }, ...] }')
  }
  const { keys, ttl = DEFAULT_SIGNATURE_TTL, ...rest } = signedContext as Record<string, unknown>
  const unknown = Object.keys(rest)
  if (unknown.length > 0) failOption(`unknown signedContext option(s) ${unknown.join(', ')}; known are keys, ttl`)
  if (!Array.isArray(keys) || keys.length === 0) failOption('signedContext.keys must be a non-empty array of { id, secret }; the first signs')
  const checked = keys.map(validateKey)
  checked.forEach(({ id, bytes }, index) => {
    const earlier = checked.slice(0, index)
    if (earlier.some((other) => other.id === id)) failOption(`signedContext.keys: the id "${id}" is given twice; every key needs its own id`)
    // The same secret under a new id would make a rotation that rotates nothing.
    const twin = earlier.find((other) => other.bytes.equals(bytes))
    if (twin !== undefined) failOption(`signedContext.keys: "${id}" has the same secret as "${twin.id}"; a new key needs a new secret`)
  })
  const resolved = checked.map(({ id, bytes }) => ({ id, secret: createSecretKey(bytes) }))
  return { signingKey: resolved[0] as ResolvedSigningKey, keys: resolved, ttl: validateTtl(ttl) }
}
