// The one rule for what counts as a tenant id: a canonical UUID, normalised to lower case.
// PostgreSQL's uuid parser also swallows braces, missing hyphens and upper case; accepting those
// would let two spellings name one tenant, so anything but the canonical 8-4-4-4-12 form is refused.

const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const NIL_UUID = '00000000-0000-0000-0000-000000000000'

/**
 * Returns the tenant id in canonical lower-case form, or null when `value` is not a canonical UUID
 * (wrong type, wrong length, braces, missing hyphens, the nil UUID).
 */
export function normalizeTenantId (value: unknown): string | null {
  // The length test first: a hostile 1 MB claim costs nothing.
  if (typeof value !== 'string' || value.length !== 36) return null
  const lowered = value.toLowerCase()
  if (!CANONICAL_UUID.test(lowered) || lowered === NIL_UUID) return null
  return lowered
}
