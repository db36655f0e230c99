// Turns the error of a pool that cannot connect at all (met by the startup check, the first thing
// that connects) into one that names the plugin, what failed and the fix. pg's own messages
// ("connect ECONNREFUSED 127.0.0.1:5433", "password authentication failed for user ...") say
// neither which component was connecting nor what to change; the original stays in `cause`.
import { ConnectionFailedError } from './errors.js'

interface ConnectionFault {
  code?: unknown
  address?: unknown
  port?: unknown
  hostname?: unknown
  message?: unknown
}

interface Explanation {
  problem: string
  fix: string
}

// SQLSTATEs and socket codes of a connection attempt, each with the change that fixes it. With
// password authentication PostgreSQL answers 28P01 for a role that does not exist too, by design
// (it does not reveal which roles exist); 28000 is what trust and peer authentication answer.
function explain (fault: ConnectionFault): Explanation | undefined {
  const where = typeof fault.address === 'string' ? ` at ${fault.address}${typeof fault.port === 'number' ? `:${fault.port}` : ''}` : ''
  switch (fault.code) {
    case 'ECONNREFUSED':
      return { problem: `the connection was refused${where}: no PostgreSQL listens there`, fix: 'start PostgreSQL, or correct the host and port of the pool (connectionString, host, port, or PGHOST/PGPORT)' }
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { problem: `the host ${String(fault.hostname ?? '')} could not be resolved`, fix: 'correct the host of the pool (connectionString, host, or PGHOST)' }
    case '28P01':
      return { problem: `${String(fault.message)} (wrong password, or no such role)`, fix: 'correct the password of the pool\'s role (connectionString, password, or PGPASSWORD), or create the role' }
    case '28000':
      return { problem: String(fault.message), fix: 'create the login role, or correct the user of the pool (connectionString, user, or PGUSER); if the message names pg_hba.conf, allow the role and database there' }
    case '3D000':
      return { problem: String(fault.message), fix: 'create the database (and run the migrations), or correct the database of the pool (connectionString, database, or PGDATABASE)' }
    default:
      // pg's connectionTimeoutMillis expired before the server answered at all.
      if (typeof fault.message === 'string' && /connection timeout|timeout expired/i.test(fault.message)) {
        return { problem: 'PostgreSQL did not answer within connectionTimeoutMillis', fix: 'check that the host and port are reachable from here (firewall, network), or raise the pool\'s connectionTimeoutMillis' }
      }
      return undefined
  }
}

/** Rethrows `error` as ConnectionFailedError (cause kept) when it is a connection failure; otherwise as it is. */
export function explainConnectionFailure (error: unknown): never {
  const explanation = error !== null && typeof error === 'object' ? explain(error as ConnectionFault) : undefined
  if (explanation === undefined) throw error
  throw new ConnectionFailedError(`${explanation.problem}; fix: ${explanation.fix}`, { cause: error })
}
