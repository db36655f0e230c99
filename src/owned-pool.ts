// The pool the plugin creates from `connectionString`, and so owns: what it defaults to. Its
// lifecycle is wired in plugin.ts (idle errors logged, role checked at ready, ended on close). A
// pool the user passes stays the user's: the plugin never ends it.
import pg from 'pg'
import type { Pool, PoolConfig } from 'pg'

/** pg pool settings for the pool the plugin creates: everything but the connection string. */
export type OwnedPoolConfig = Omit<PoolConfig, 'connectionString'>

/** pg's own default (0) waits for a free connection forever; an exhausted pool would hang requests. */
export const DEFAULT_OWNED_CONNECTION_TIMEOUT = 5000

export function createOwnedPool (connectionString: string, config: unknown): Pool {
  // A key given as undefined (`{ connectionTimeoutMillis: undefined }`) keeps the default.
  const given = Object.entries((config ?? {}) as OwnedPoolConfig).filter(([, value]) => value !== undefined)
  return new pg.Pool({ connectionTimeoutMillis: DEFAULT_OWNED_CONNECTION_TIMEOUT, ...Object.fromEntries(given), connectionString })
}
