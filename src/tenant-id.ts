// The one rule for what counts as a tenant id, for each kind of key a tenants table can have. Each
// kind has exactly one spelling per tenant: whatever PostgreSQL's own parser would also accept
// (braces or upper case in a uuid, '007' or '+7' for a bigint, 'Acme' beside 'acme', unicode
// lookalikes, whitespace) is refused, or mapped onto that spelling only where PostgreSQL itself
// would read both as the same value (the case of a uuid).
import { InvalidOptionError } from './errors.js'

/** The type of the tenants table's key: `uuid` (the default), `bigint`, or a `slug` (text). */
export type TenantIdType = 'uuid' | 'bigint' | 'slug'

const TENANT_ID_TYPES: ReadonlySet<string> = new Set<TenantIdType>(['uuid', 'bigint', 'slug'])

/** The SQL type of the tenant column (and of a tenants table's key) for each tenant id type. */
export const TENANT_ID_SQL_TYPE: Readonly<Record<TenantIdType, string>> = { uuid: 'uuid', bigint: 'bigint', slug: 'text' }

/** The cast that turns the tenant as text (the setting, the verified function) into the column's type; a slug is compared as the text it is. */
export const TENANT_ID_CAST: Readonly<Record<TenantIdType, string>> = { uuid: '::uuid', bigint: '::bigint', slug: '' }

const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const NIL_UUID = '00000000-0000-0000-0000-000000000000'
// A positive bigint with no sign, no leading zero, no space: '7', never '07', '+7' or '7.0'.
const CANONICAL_BIGINT = /^[1-9][0-9]{0,18}$/
const MAX_BIGINT = 9223372036854775807n
// Lower-case ASCII letters and digits, single inner hyphens, 1 to 63 characters (a DNS label):
// no case twins, no lookalike letters from other scripts, nothing to trim.
const CANONICAL_SLUG = /^[a-z0-9](?:-?[a-z0-9]){0,62}$/

/** Checks the `tenantIdType` option of the plugin, withTenant and the schema helpers. */
export function validateTenantIdType (value: unknown): TenantIdType {
  if (value === undefined) return 'uuid'
  if (typeof value !== 'string' || !TENANT_ID_TYPES.has(value)) {
    throw new InvalidOptionError(`tenantIdType must be 'uuid', 'bigint' or 'slug', got ${JSON.stringify(value)}`)
  }
  return value as TenantIdType
}

function normalizeUuid (value: unknown): string | null {
  // The length test first: a hostile 1 MB claim costs nothing.
  if (typeof value !== 'string' || value.length !== 36) return null
  const lowered = value.toLowerCase()
  if (!CANONICAL_UUID.test(lowered) || lowered === NIL_UUID) return null
  return lowered
}

function normalizeBigint (value: unknown): string | null {
  // A JSON number is accepted while it is exact; beyond 2^53 the token must carry a string.
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? String(value) : null
  if (typeof value !== 'string' || !CANONICAL_BIGINT.test(value)) return null
  return BigInt(value) <= MAX_BIGINT ? value : null
}

function normalizeSlug (value: unknown): string | null {
  return typeof value === 'string' && value.length <= 63 && CANONICAL_SLUG.test(value) ? value : null
}

/**
 * Returns the tenant id in its canonical form, or null when `value` is not one. A uuid (the
 * default) must be the 8-4-4-4-12 form, any case, lower-cased, not the nil UUID; a bigint a
 * positive integer without sign, leading zero or space (or an exact JSON number); a slug lower-case
 * ASCII letters, digits and single inner hyphens, at most 63 characters.
 */
export function normalizeTenantId (value: unknown, type: TenantIdType = 'uuid'): string | null {
  if (type === 'bigint') return normalizeBigint(value)
  if (type === 'slug') return normalizeSlug(value)
  return normalizeUuid(value)
}
