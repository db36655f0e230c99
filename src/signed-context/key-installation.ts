// Installing and removing signing keys in the database, for setup and rotation (add the new key,
// deploy with it first, remove the old one). Run on a connection of the keys' owner role (or a
// superuser); the application role cannot: it has no EXECUTE on the helpers, and they write with the
// caller's rights. The secret travels as a bound parameter, so it reaches neither the query text
// nor pg_stat_statements; a server that logs parameters (log_parameter_max_length) would log it.
import type { Pool, PoolClient, Client } from 'pg'
import { SIGNED_CONTEXT_SCHEMA } from './schema-sql.js'
import { validateSignedContext } from './options.js'
import type { SigningKey } from './options.js'

/** A pg Pool, PoolClient or Client of the keys' owner role. */
export type OwnerConnection = Pick<Pool | PoolClient | Client, 'query'>

/**
 * Installs `key` (validated as the plugin validates `signedContext.keys`): from then on the
 * database accepts signatures made with it. An id already installed is refused (23505).
 */
export async function installSigningKey (owner: OwnerConnection, key: SigningKey): Promise<void> {
  const { signingKey } = validateSignedContext({ keys: [key] })
  await owner.query(`SELECT ${SIGNED_CONTEXT_SCHEMA}.add_key($1, $2)`, [signingKey.id, signingKey.secret.export()])
}

/** Removes the key `id`: signatures made with it stop verifying at the next statement. False when no such key was installed. */
export async function removeSigningKey (owner: OwnerConnection, id: string): Promise<boolean> {
  const { rows } = await owner.query<{ removed: boolean }>(`SELECT ${SIGNED_CONTEXT_SCHEMA}.remove_key($1) AS removed`, [id])
  return rows[0]?.removed === true
}
