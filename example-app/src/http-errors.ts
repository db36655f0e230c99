// The example's own HTTP errors, and the one place route code reads a database error's SQLSTATE.
// The answers name no other row: a duplicate says only that the value is taken, and a row of
// another tenant is "not found", exactly like a row that does not exist.
import createError from '@fastify/error'

/** The row does not exist for this tenant (whether or not another tenant has it). */
export const NotFoundError = createError('EXAMPLE_NOT_FOUND', '%s not found', 404)

/** A unique key of this tenant already holds the value. */
export const ConflictError = createError('EXAMPLE_CONFLICT', '%s', 409)

/** PostgreSQL error codes the routes translate. */
export const UNIQUE_VIOLATION = '23505'
export const FOREIGN_KEY_VIOLATION = '23503'

/** The SQLSTATE of a failed query: drizzle's DrizzleQueryError keeps pg's error in `cause`. */
export function sqlState (error: unknown): string | undefined {
  const cause = error instanceof Error ? error.cause : undefined
  const code = (cause as { code?: unknown } | undefined)?.code
  return typeof code === 'string' ? code : undefined
}
