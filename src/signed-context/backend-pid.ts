// The backend pid a pg connection believes it talks to, for signing without a round trip.
// PostgreSQL sends it in BackendKeyData when the connection starts (for query cancellation); pg
// keeps it as `client.processID`, set in its 'backendKeyData' handler and read by its own cancel
// path, but absent from its typings. This module is the one place that reads it; rerun
// test/signed-context-sql.test.ts on every pg upgrade. Behind a pooler (PgBouncer) the value is
// the pooler's own invention, not a backend's: signatures made with it never verify, and the
// startup check says so (inspection.ts).
import type { ClientBase } from 'pg'

/** The backend pid of a connected client; undefined before BackendKeyData arrived. */
export function backendPidOf (client: ClientBase): number | undefined {
  const pid = (client as ClientBase & { processID?: unknown }).processID
  return typeof pid === 'number' && Number.isSafeInteger(pid) && pid > 0 ? pid : undefined
}
