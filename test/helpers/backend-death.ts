// A connection that dies at a chosen point, as in a failover or when an operator ends a backend:
// `faults.die()` terminates the backend that calls it, in the middle of that backend's statement
// (PL/pgSQL checks for the signal before its next statement), so the statement fails with 57P01
// and any ROLLBACK after it fails too, the connection being gone. The hardened roles may not call
// pg_terminate_backend themselves: the function is SECURITY DEFINER, owned by the superuser, in a
// schema of its own (so the isolation kit and the audit, which read the tables' schemas, never see
// it). `killInserts` puts it behind a trigger, for code whose statements the test does not write.
// Also a record of what a pool was told when each client came back.
import type pg from 'pg'
import type { Test } from 'tap'
import type { TestDatabase } from './database.js'

/** The SQL expression that kills the calling backend mid-statement. */
export const DIE = 'faults.die()'

/** Creates `faults.die()` on `db`, callable by `roles`. */
export async function installDeath (db: TestDatabase, roles: string[]): Promise<void> {
  await db.admin.query(`CREATE SCHEMA faults;
    CREATE FUNCTION faults.die () RETURNS int SECURITY DEFINER SET search_path = pg_catalog LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid());
      RETURN 1;
    END $$;
    REVOKE ALL ON FUNCTION faults.die() FROM PUBLIC;
    -- A trigger needs no EXECUTE of whoever fires it: nobody may call this one, so the isolation
    -- kit's bypass check (SECURITY DEFINER functions the application role may use) stays quiet.
    CREATE FUNCTION faults.die_on_insert () RETURNS trigger SECURITY DEFINER SET search_path = pg_catalog LANGUAGE plpgsql AS $$
    BEGIN
      IF session_user::text = TG_ARGV[0] THEN PERFORM faults.die(); END IF;
      RETURN NEW;
    END $$;
    REVOKE ALL ON FUNCTION faults.die_on_insert() FROM PUBLIC`)
  for (const role of roles) await db.admin.query(`GRANT USAGE ON SCHEMA faults TO ${role}; GRANT EXECUTE ON FUNCTION faults.die() TO ${role}`)
}

/** Makes every insert into `table` by a session of `role` kill that session's backend, until the test ends. */
export async function killInserts (t: Test, db: TestDatabase, table: string, role: string): Promise<void> {
  await db.admin.query(`CREATE TRIGGER die_on_insert BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION faults.die_on_insert('${role}')`)
  t.teardown(() => db.admin.query(`DROP TRIGGER IF EXISTS die_on_insert ON ${table}`))
}

/**
 * Records each client handed back to `pool`: 'destroyed' when released with an error (or true),
 * 'pooled' otherwise. pg-pool drops a client whose socket is closed even when released without one,
 * so the count of clients alone cannot tell the two apart; what the code said can.
 */
export function releases (pool: pg.Pool): Array<'destroyed' | 'pooled'> {
  const seen: Array<'destroyed' | 'pooled'> = []
  pool.on('release', (error: Error | boolean | null | undefined) => { seen.push(error === undefined || error === null || error === false ? 'pooled' : 'destroyed') })
  return seen
}

/** Throws unless each of the next `count` checkouts of `pool` answers (none is a dead client). */
export async function checkoutsWork (pool: pg.Pool, count: number): Promise<void> {
  const clients = []
  try {
    for (let index = 0; index < count; index++) {
      const client = await pool.connect()
      clients.push(client)
      await client.query('SELECT 1')
    }
  } finally {
    for (const client of clients) client.release()
  }
}
