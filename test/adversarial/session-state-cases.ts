// Session state attacks: tenant A's route (or A's withTenant job) leaves something on its
// connection that outlives the transaction, and tenant B's next request on that very connection (a
// pool of one) must find nothing of it. Each case compares what B sees with what a fresh
// connection of the app role sees in B's context, reads back as the superuser what B wrote (B's
// non-ASCII text intact, in the real table), and what A committed for B (nothing). Shared by the
// direct run, the withTenant variants and the PgBouncer run (one server connection, no
// server_reset_query: the plugin's own reset is all there is).
import { eq, sql } from 'drizzle-orm'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { withTenant } from 'fastify-tenant-rls'
import type { TenantDatabase } from 'fastify-tenant-rls'
import pg from 'pg'
import type { Test } from 'tap'
import type { TestDatabase } from '../helpers/database.js'
import { attackApp, callAs, documents, documentSchema, gate } from './documents.js'
import type { World } from './documents.js'
import { pluginOptionsFor } from './targets.js'
import type { Target } from './targets.js'

type DocumentDatabase = TenantDatabase<typeof documentSchema>

const dbOf = (request: FastifyRequest): DocumentDatabase => request.db as unknown as DocumentDatabase

/** What B writes in every case: text that a wrong client_encoding would store corrupted. */
export const NON_ASCII = 'Zürich – Straße № 5 €'

/** How A's transaction ends after leaving its state. */
type Ending =
  /** the route returns: the plugin commits */
  | 'commit'
  /** the route throws: the plugin rolls back */
  | 'throw'
  /** a later statement fails (caught by the route): the commit fails, the plugin rolls back */
  | 'failed statement'
  /** the statements run inside request.db.transaction() (a savepoint), then the route returns */
  | 'savepoint'
  /** the route sends COMMIT itself: the plugin finds the transaction already ended */
  | 'route commit'

export interface SessionStateCase {
  /** The attack, and what it would achieve if it outlived A's transaction. */
  name: string
  /** What A's route runs through its handle, in order (%A% / %B%: the tenants' ids). */
  leave: string[]
  ending?: Ending
  /** One statement B runs first: its result (rows, or SQLSTATE) must be what a fresh connection gets. */
  probe: string
  /** Needs the app role to create temporary objects (granted after the startup check). */
  temp?: boolean
  /** Only against these targets (default: every target). */
  targets?: Array<Target['name']>
  /** Checks between A's request and B's (from other sessions). */
  afterA?: (t: Test, context: CaseContext) => Promise<void>
  /** More checks once B is done, and any cleanup of the case. */
  verify?: (t: Test, context: CaseContext) => Promise<void>
}

interface CaseContext {
  db: TestDatabase
  pool: pg.Pool
  /** Every LISTEN notification any client of the case's pool received. */
  notifications: pg.Notification[]
}

// Temporary relations and functions of the session (its temp schema may exist, empty, after a reset).
const TEMP_OBJECTS = 'SELECT ARRAY(SELECT relname::text FROM pg_class WHERE relnamespace = pg_my_temp_schema() ' +
  'UNION ALL SELECT proname::text FROM pg_proc WHERE pronamespace = pg_my_temp_schema() ORDER BY 1) AS temp'
const SEARCH_PATH = "SELECT current_setting('search_path') AS search_path"
// pg_locks is closed to the app role by the hardening: unlocking tells whether this session held it.
const ADVISORY_HELD = 'SELECT pg_advisory_unlock(%KEY%) AS held'
const ADVISORY_HELD_SHARED = 'SELECT pg_advisory_unlock_shared(%KEY%) AS held'
const LISTENING = "SELECT coalesce(array_agg(channel ORDER BY channel), '{}') AS channels FROM pg_listening_channels() AS channel"
const SQL_PREPARED = 'SELECT name, statement FROM pg_prepared_statements WHERE from_sql ORDER BY name'
const DECOY_COLUMNS = "'%B%'::uuid AS tenant_id, gen_random_uuid() AS id, 'INV-1'::text AS code, 'first'::text AS slug, 'decoy planted by A'::text AS body"
const ADVISORY_KEY = 424242

// Plain SETs of ordinary settings (every one a user may change), each to a value that differs from
// the default. lock_timeout is left out: the plugin sets it for every transaction itself.
const SWEPT_SETTINGS: Record<string, string> = {
  application_name: 'tenant A was here',
  bytea_output: 'escape',
  check_function_bodies: 'off',
  client_min_messages: 'error',
  constraint_exclusion: 'on',
  cursor_tuple_fraction: '0.5',
  DateStyle: 'German, DMY',
  default_text_search_config: 'pg_catalog.german',
  default_transaction_deferrable: 'on',
  default_transaction_isolation: 'repeatable read',
  enable_seqscan: 'off',
  escape_string_warning: 'off',
  extra_float_digits: '0',
  geqo: 'off',
  gin_fuzzy_search_limit: '7',
  idle_in_transaction_session_timeout: '3600000',
  idle_session_timeout: '3600000',
  IntervalStyle: 'sql_standard',
  max_parallel_workers_per_gather: '0',
  plan_cache_mode: 'force_custom_plan',
  random_page_cost: '99',
  search_path: 'decoy, public',
  standard_conforming_strings: 'off',
  statement_timeout: '3600000',
  synchronous_commit: 'off',
  TimeZone: 'Asia/Kathmandu',
  transaction_timeout: '3600000',
  work_mem: '77MB',
  xmloption: 'document'
}
const SWEEP_PROBE = `SELECT name, setting FROM pg_settings WHERE name = ANY('{${Object.keys(SWEPT_SETTINGS).join(',')}}') ORDER BY name`

async function otherSessionCanLock (t: Test, db: TestDatabase): Promise<void> {
  const client = await db.admin.connect()
  try {
    // Exclusive: it fails while A's session still holds the lock, shared or not.
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [ADVISORY_KEY])
    t.equal(rows[0]?.locked, true, "once A's request is over, another session takes the lock A's session took")
    await client.query('SELECT pg_advisory_unlock_all()')
  } finally {
    client.release()
  }
}

async function noNotificationReaches (t: Test, { db, pool, notifications }: CaseContext): Promise<void> {
  await db.admin.query("SELECT pg_notify('stash', 'sent after B')")
  // Any query on a listening backend delivers its pending notifications before ReadyForQuery, so
  // one round trip on the pool's (only) connection is enough to know none is coming.
  await pool.query('SELECT 1')
  t.same(notifications.map((notification) => notification.channel), [], "no notification reaches the connection A's route listened on")
}

export const sessionStateCases: SessionStateCase[] = [
  // Temporary objects: their rows outlive COMMIT (ON COMMIT PRESERVE ROWS is the default), and they
  // come first in the search path for relations.
  {
    name: 'a temp table filled by A is read by B',
    leave: ['CREATE TEMP TABLE stash AS SELECT body FROM documents'],
    probe: 'SELECT body FROM stash',
    temp: true
  },
  {
    name: 'a temp table created in a savepoint outlives it',
    leave: ['CREATE TEMP TABLE stash (body text) ON COMMIT PRESERVE ROWS', "INSERT INTO stash VALUES ('A secret')"],
    ending: 'savepoint',
    probe: 'SELECT body FROM stash',
    temp: true
  },
  {
    name: 'a temp table created before the route\'s own COMMIT outlives it',
    leave: ["CREATE TEMP TABLE stash AS SELECT 'A secret'::text AS body"],
    ending: 'route commit',
    probe: 'SELECT body FROM stash',
    temp: true
  },
  {
    name: "a temp table named documents shadows the real one: B reads A's decoy and writes into A's table",
    leave: ['CREATE TEMP TABLE documents (LIKE public.documents INCLUDING DEFAULTS)', `INSERT INTO documents SELECT ${DECOY_COLUMNS}`],
    probe: TEMP_OBJECTS,
    temp: true
  },
  {
    name: "an ON COMMIT DELETE ROWS temp table named documents makes B's reads empty and its writes vanish",
    leave: ['CREATE TEMP TABLE documents (LIKE public.documents INCLUDING DEFAULTS) ON COMMIT DELETE ROWS'],
    probe: TEMP_OBJECTS,
    temp: true
  },
  {
    name: "a temp view named documents serves A's decoy to B",
    leave: [`CREATE TEMP VIEW documents AS SELECT ${DECOY_COLUMNS}`],
    probe: TEMP_OBJECTS,
    temp: true
  },
  {
    name: 'a temp function of A is callable by B',
    leave: ["CREATE FUNCTION pg_temp.stash() RETURNS text LANGUAGE sql AS $$ SELECT 'A secret' $$"],
    probe: TEMP_OBJECTS,
    temp: true
  },
  // Cursors: WITH HOLD ones outlive COMMIT.
  {
    name: 'a WITH HOLD cursor declared by A is fetched by B',
    leave: ['DECLARE stash CURSOR WITH HOLD FOR SELECT body FROM documents'],
    probe: 'FETCH ALL FROM stash'
  },
  {
    name: 'a WITH HOLD cursor declared in a savepoint outlives it',
    leave: ['DECLARE stash CURSOR WITH HOLD FOR SELECT body FROM documents'],
    ending: 'savepoint',
    probe: 'FETCH ALL FROM stash'
  },
  {
    name: "a WITH HOLD cursor runs at COMMIT, after the pre-commit check: it switches to B and writes B a row through the app's own function",
    leave: ["DECLARE stash CURSOR WITH HOLD FOR SELECT set_config('app.current_tenant_id', '%B%', true) AS tenant, add_document('PLANTED') AS planted"],
    probe: 'FETCH ALL FROM stash'
  },
  {
    name: 'a WITH HOLD cursor runs at COMMIT, after the pre-commit check: it switches to B and writes B a row through a temp function',
    leave: [
      "CREATE FUNCTION pg_temp.plant() RETURNS text LANGUAGE sql AS $$ INSERT INTO documents (tenant_id, code, slug, body) VALUES (current_setting('app.current_tenant_id')::uuid, 'PLANTED', 'planted', 'planted at commit') RETURNING code $$",
      "DECLARE stash CURSOR WITH HOLD FOR SELECT set_config('app.current_tenant_id', '%B%', true) AS tenant, pg_temp.plant() AS planted"
    ],
    probe: TEMP_OBJECTS,
    temp: true
  },
  // Plain SET and set_config(..., false), by every route to them.
  {
    name: "SET search_path: B's unqualified queries read and write another schema",
    leave: ['SET search_path = decoy, public'],
    probe: SEARCH_PATH
  },
  {
    name: "set_config('search_path', ..., false) does the same",
    leave: ["SELECT set_config('search_path', 'decoy, public', false)"],
    probe: SEARCH_PATH
  },
  {
    name: 'set_config(..., false) inside a DO block does the same',
    leave: ["DO $$ BEGIN PERFORM set_config('search_path', 'decoy, public', false); END $$"],
    probe: SEARCH_PATH
  },
  {
    name: 'set_config(..., false) inside a temp function does the same',
    leave: ["CREATE FUNCTION pg_temp.switch() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN set_config('search_path', 'decoy, public', false); END $$", 'SELECT pg_temp.switch()'],
    probe: SEARCH_PATH,
    temp: true
  },
  {
    name: 'SET SESSION search_path, then the route\'s own COMMIT',
    leave: ['SET SESSION search_path = decoy, public'],
    ending: 'route commit',
    probe: SEARCH_PATH
  },
  {
    name: "SET client_encoding: B's text is stored corrupted while its reply looks right",
    leave: ["SET client_encoding = 'LATIN1'"],
    probe: "SELECT current_setting('client_encoding') AS encoding"
  },
  {
    name: "SET TimeZone: B's timestamps shift",
    leave: ["SET TimeZone = 'Pacific/Kiritimati'"],
    probe: "SELECT '2024-03-04 05:06:07'::timestamptz::text AS at, current_setting('TimeZone') AS zone"
  },
  {
    name: 'SET DateStyle: B reads (and drizzle parses) timestamps in another format',
    leave: ["SET DateStyle = 'SQL, DMY'"],
    probe: "SELECT '2024-03-04 05:06:07+00'::timestamptz::text AS at, '2024-03-04'::date::text AS day"
  },
  {
    name: 'SET IntervalStyle: B reads intervals in another format',
    leave: ["SET IntervalStyle = 'iso_8601'"],
    probe: "SELECT '1 day 02:03:04'::interval::text AS span"
  },
  {
    name: 'SET extra_float_digits: B reads rounded floats',
    leave: ['SET extra_float_digits = -15'],
    probe: 'SELECT 3.141592653589793::float8 AS pi'
  },
  {
    name: 'SET statement_timeout reaches B',
    leave: ["SET statement_timeout = '1h'"],
    probe: "SELECT current_setting('statement_timeout') AS timeout"
  },
  {
    name: "SET app.current_user_id: A's user would be stamped onto B's rows",
    leave: ["SET app.current_user_id = 'user-of-tenant-A'"],
    probe: "SELECT coalesce(current_setting('app.current_user_id', true), '') AS user_id"
  },
  {
    name: "SET row_security = off makes B's reads fail",
    leave: ['SET row_security = off'],
    probe: "SELECT current_setting('row_security') AS row_security"
  },
  {
    name: "SET default_transaction_read_only = on makes B's writes fail",
    leave: ['SET default_transaction_read_only = on'],
    probe: "SELECT current_setting('transaction_read_only') AS read_only"
  },
  {
    name: 'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY does the same',
    leave: ['SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY'],
    probe: "SELECT current_setting('transaction_read_only') AS read_only"
  },
  {
    name: "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE changes B's isolation",
    leave: ['SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE'],
    probe: "SELECT current_setting('transaction_isolation') AS isolation"
  },
  {
    name: 'plain SETs of every other ordinary setting reach B (timeouts, commit durability, string syntax, planner)',
    leave: Object.entries(SWEPT_SETTINGS).map(([name, value]) => `SET ${name} = '${value}'`),
    probe: SWEEP_PROBE
  },
  // Session advisory locks survive COMMIT and ROLLBACK alike.
  {
    name: "a session advisory lock of A's stays held",
    leave: [`SELECT pg_advisory_lock(${ADVISORY_KEY})`],
    probe: ADVISORY_HELD,
    afterA: (t, { db }) => otherSessionCanLock(t, db)
  },
  {
    name: 'a session advisory lock stays held after A\'s route throws (ROLLBACK)',
    leave: [`SELECT pg_advisory_lock(${ADVISORY_KEY})`],
    ending: 'throw',
    probe: ADVISORY_HELD,
    afterA: (t, { db }) => otherSessionCanLock(t, db)
  },
  {
    name: 'a session advisory lock stays held after a failed statement aborts A\'s transaction',
    leave: [`SELECT pg_advisory_lock(${ADVISORY_KEY})`],
    ending: 'failed statement',
    probe: ADVISORY_HELD,
    afterA: (t, { db }) => otherSessionCanLock(t, db)
  },
  {
    name: 'a shared session advisory lock taken in a savepoint stays held',
    leave: [`SELECT pg_advisory_lock_shared(${ADVISORY_KEY})`],
    ending: 'savepoint',
    probe: ADVISORY_HELD_SHARED,
    afterA: (t, { db }) => otherSessionCanLock(t, db)
  },
  // LISTEN registrations take effect at COMMIT and stay.
  {
    name: "A's LISTEN stays registered: B's connection receives A's notifications",
    leave: ['LISTEN stash'],
    probe: LISTENING,
    verify: noNotificationReaches
  },
  {
    name: "a LISTEN followed by the route's own COMMIT stays registered",
    leave: ['LISTEN stash'],
    ending: 'route commit',
    probe: LISTENING,
    verify: noNotificationReaches
  },
  {
    name: 'a LISTEN in a savepoint stays registered',
    leave: ['LISTEN stash'],
    ending: 'savepoint',
    probe: LISTENING,
    verify: noNotificationReaches
  },
  // SQL-level prepared statements are not transactional.
  {
    name: "A's SQL PREPARE is executed by B",
    leave: ["PREPARE stash AS SELECT 'A secret'::text AS body"],
    probe: 'EXECUTE stash'
  },
  {
    name: "A's SQL PREPARE survives A's ROLLBACK",
    leave: ["PREPARE stash AS SELECT 'A secret'::text AS body"],
    ending: 'throw',
    probe: SQL_PREPARED
  },
  {
    name: "A's SQL PREPARE survives a failed statement",
    leave: ["PREPARE stash AS SELECT 'A secret'::text AS body"],
    ending: 'failed statement',
    probe: 'EXECUTE stash'
  },
  // Sequences: currval/lastval are per session.
  {
    name: "lastval() tells B the id A's insert got",
    leave: ["INSERT INTO tickets (tenant_id, title) VALUES ('%A%', 'ticket of A')"],
    probe: 'SELECT lastval() AS last'
  },
  {
    name: "currval() tells B the value A's nextval got",
    leave: ["SELECT nextval('tickets_id_seq')"],
    probe: "SELECT currval('tickets_id_seq') AS current"
  },
  // Stored state of the shared role: reaches every connection, not just this one.
  {
    name: "ALTER ROLE CURRENT_USER PASSWORD from A's route locks every tenant out of new connections",
    leave: ["ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-tenant-a'"],
    probe: 'SELECT 1 AS one',
    targets: ['direct'],
    async verify (t, { db }) {
      const fresh = new pg.Client({ connectionString: db.url() })
      const login = await fresh.connect().then(() => 'logged in', (error: { code?: string }) => error.code)
      await fresh.end().catch(() => {})
      // Put the password back whatever happened, so later cases can log in.
      await db.admin.query(`ALTER ROLE ${db.appRole} PASSWORD 'app-password'`)
      t.equal(login, 'logged in', 'a new connection of the app role still logs in with its password')
    }
  },
  {
    name: 'PREPARE TRANSACTION cannot park A\'s transaction for a later COMMIT PREPARED',
    leave: ["PREPARE TRANSACTION 'stash'"],
    probe: 'SELECT 1 AS one',
    async verify (t, { db }) {
      const { rows } = await db.admin.query('SELECT gid FROM pg_prepared_xacts')
      t.same(rows, [], 'no prepared transaction exists')
    }
  }
]

/**
 * Creates what the attacks need besides the documents world: a decoy schema the app role can read
 * and write (an "archive" with its own tenant rows), a table with a sequence, and the kind of
 * function a real application has: SECURITY INVOKER, writes a row for the current tenant.
 */
export async function createSessionStateWorld (db: TestDatabase, world: World): Promise<void> {
  const policy = "tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
  await db.admin.query(`CREATE SCHEMA decoy AUTHORIZATION ${db.ownerRole}`)
  await db.asOwner(`
    CREATE TABLE decoy.documents (LIKE public.documents INCLUDING DEFAULTS);
    ALTER TABLE decoy.documents ENABLE ROW LEVEL SECURITY;
    ALTER TABLE decoy.documents FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON decoy.documents USING (${policy}) WITH CHECK (${policy});
    GRANT USAGE ON SCHEMA decoy TO ${db.appRole};
    GRANT SELECT, INSERT ON decoy.documents TO ${db.appRole};
    CREATE TABLE tickets (tenant_id uuid NOT NULL, id bigserial PRIMARY KEY, title text NOT NULL);
    ALTER TABLE tickets ENABLE ROW LEVEL SECURITY;
    ALTER TABLE tickets FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON tickets USING (${policy}) WITH CHECK (${policy});
    GRANT SELECT, INSERT ON tickets TO ${db.appRole};
    GRANT USAGE ON SEQUENCE tickets_id_seq TO ${db.appRole};
    CREATE FUNCTION add_document(code text) RETURNS text LANGUAGE sql AS $$
      INSERT INTO public.documents (tenant_id, code, slug, body)
      VALUES (current_setting('app.current_tenant_id')::uuid, code, code, 'added by add_document') RETURNING code
    $$;
    GRANT EXECUTE ON FUNCTION add_document(text) TO ${db.appRole};
  `)
  for (const tenant of world.tenants) {
    await db.admin.query("INSERT INTO decoy.documents (tenant_id, code, slug, body) VALUES ($1, 'INV-1', 'first', 'decoy in another schema')", [tenant])
  }
}

function sqlStateOf (error: unknown): string {
  let current: unknown = error
  for (let depth = 0; current instanceof Error && depth < 8; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code
    current = current.cause
  }
  return `no SQLSTATE: ${String(error)}`
}

type ProbeOutcome = { rows: unknown } | { sqlState: string }

/** Rows as they would reach a client through a JSON reply. */
const asJson = (rows: unknown): unknown => JSON.parse(JSON.stringify(rows))

/** What `probe` gives on a brand-new connection of the app role, in `tenant`'s context. */
async function freshProbe (db: TestDatabase, tenant: string, probe: string): Promise<ProbeOutcome> {
  const client = new pg.Client({ connectionString: db.url() })
  await client.connect()
  try {
    await client.query('BEGIN')
    await client.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenant])
    return await client.query({ text: probe, queryMode: 'extended' } as pg.QueryConfig)
      .then((result) => ({ rows: asJson(result.rows) }), (error: unknown) => ({ sqlState: sqlStateOf(error) }))
  } finally {
    await client.query('ROLLBACK').catch(() => {})
    await client.end()
  }
}

interface Look { probe: ProbeOutcome, documents: string[] }

/** B's side of every case: the probe (in a savepoint, so a refusal is an answer), a read, a write. */
async function look (database: DocumentDatabase, probe: string, tenant: string, code: string): Promise<Look> {
  const probed: ProbeOutcome = await database.transaction((savepoint) => savepoint.execute(sql.raw(probe)))
    .then((result) => ({ rows: asJson(result.rows) }), (error: unknown) => ({ sqlState: sqlStateOf(error) }))
  const rows = await database.select().from(documents).orderBy(documents.code)
  await database.insert(documents).values({ tenantId: tenant, code, slug: code, body: NON_ASCII })
  return { probe: probed, documents: rows.map((row) => `${row.tenantId}:${row.code}:${row.body}`) }
}

/** A's side: leave the state, then end the transaction the case's way. */
async function leave (database: DocumentDatabase, statements: string[], ending: Ending): Promise<string> {
  const run = async (handle: DocumentDatabase): Promise<void> => {
    for (const statement of statements) await handle.execute(sql.raw(statement))
  }
  if (ending === 'savepoint') await database.transaction(async (savepoint) => run(savepoint as unknown as DocumentDatabase))
  else await run(database)
  if (ending === 'throw') throw new Error('A fails after leaving its state')
  if (ending === 'failed statement') await database.execute(sql.raw('SELECT 1/0')).catch(() => {})
  if (ending === 'route commit') await database.execute(sql.raw('COMMIT'))
  return 'left'
}

async function rowsOf (db: TestDatabase, tenant: string): Promise<string[]> {
  const { rows } = await db.admin.query<{ row: string }>("SELECT code || ':' || body AS row FROM documents WHERE tenant_id = $1 ORDER BY code", [tenant])
  return rows.map((row) => row.row)
}

/** Who leaves the state and who looks: a request, `app.withTenant`, or the standalone `withTenant`. */
export interface Variant {
  name: string
  leaveVia: 'request' | 'app.withTenant'
  lookVia: 'request' | 'withTenant'
}

export const variants = {
  requests: { name: 'request then request', leaveVia: 'request', lookVia: 'request' },
  jobLeaves: { name: 'app.withTenant then request', leaveVia: 'app.withTenant', lookVia: 'request' },
  jobLooks: { name: 'request then standalone withTenant', leaveVia: 'request', lookVia: 'withTenant' }
} as const satisfies Record<string, Variant>

/** The database name, for GRANT TEMPORARY. */
function databaseOf (db: TestDatabase): string {
  return new URL(db.adminUrl).pathname.slice(1)
}

/**
 * Registers every session-state case as a subtest of `t`. `targetFor` gives each case its own
 * target, so that behind PgBouncer each case gets a fresh server connection to attack.
 */
export async function runSessionStateCases (t: Test, db: TestDatabase, world: World, targetFor: (t: Test) => Promise<Target | undefined>, variant: Variant): Promise<void> {
  const [a, b] = world.tenants
  for (const [index, attack] of sessionStateCases.entries()) {
    await t.test(`${variant.name}: ${attack.name}`, async (t) => {
      const target = await targetFor(t)
      if (target === undefined) return
      if (attack.targets !== undefined && !attack.targets.includes(target.name)) {
        t.pass(`not applicable behind ${target.name}`)
        return
      }
      // One connection: B's request gets the very connection A's left, unless the plugin dropped it.
      const pool = target.pool(t, { max: 1 })
      const notifications: pg.Notification[] = []
      pool.on('connect', (client) => { client.on('notification', (message) => notifications.push(message)) })
      const code = `B-${index}`
      const ending = attack.ending ?? 'commit'
      const statements = attack.leave.map((statement) => statement.replaceAll('%A%', a).replaceAll('%B%', b))
      const probe = attack.probe.replaceAll('%A%', a).replaceAll('%B%', b).replaceAll('%KEY%', String(ADVISORY_KEY))
      const { app } = await attackApp(t, pool, {
        leave: (request) => leave(dbOf(request), statements, ending),
        look: (request) => look(dbOf(request), probe, b, code)
      })
      // The standalone withTenant checks the pool's role on its first call: before TEMP is granted.
      await withTenant(pool, b, async () => {}, { schema: documentSchema, ...pluginOptionsFor(pool) })
      if (attack.temp === true) {
        // The startup check refuses a role that may create temporary objects; the reset must hold
        // even where a grant came later, so it is granted once the app is running.
        await db.admin.query(`GRANT TEMPORARY ON DATABASE ${databaseOf(db)} TO ${db.appRole}`)
        t.teardown(() => db.admin.query(`REVOKE TEMPORARY ON DATABASE ${databaseOf(db)} FROM ${db.appRole}`).then(() => {}))
      }
      const expected = await freshProbe(db, b, probe)
      const bBefore = await rowsOf(db, b)

      await leaveAs(app, a, variant, statements, ending)
      t.same(await rowsOf(db, b), bBefore, 'A committed nothing for B (as the superuser sees it)')

      const looked = await lookAs(app, pool, b, variant, probe, code)
      t.equal(looked.status, 200, "B's request succeeds")
      t.same(looked.body?.probe, expected, 'B sees what a fresh connection sees')
      t.same(looked.body?.documents, bBefore.map((row) => `${b}:${row}`), 'B reads exactly its own rows from the real table')
      const { rows } = await db.admin.query<{ schema: string, body: string }>(
        "SELECT 'public' AS schema, body FROM public.documents WHERE tenant_id = $1 AND code = $2 UNION ALL SELECT 'decoy', body FROM decoy.documents WHERE code = $2",
        [b, code]
      )
      t.same(rows, [{ schema: 'public', body: NON_ASCII }], "B's write reached the real table, its text intact")
      await attack.verify?.(t, { db, pool, notifications })
      await db.assertNoLeaks(t, pool)
      await db.admin.query("DELETE FROM documents WHERE code = $1 OR code = 'PLANTED'", [code])
      await db.admin.query('DELETE FROM decoy.documents WHERE code = $1', [code])
    })
  }
}

async function leaveAs (app: FastifyInstance, tenant: string, variant: Variant, statements: string[], ending: Ending): Promise<void> {
  if (variant.leaveVia === 'request') {
    await callAs(app, tenant, 'leave')
    return
  }
  // The job's outcome is whatever the plugin decides; only what it leaves behind matters here.
  await app.withTenant(tenant, (database) => leave(database as unknown as DocumentDatabase, statements, ending)).catch(() => {})
}

async function lookAs (app: FastifyInstance, pool: pg.Pool, tenant: string, variant: Variant, probe: string, code: string): Promise<{ status: number, body: Look | undefined }> {
  if (variant.lookVia === 'request') {
    const response = await callAs(app, tenant, 'look')
    return { status: response.statusCode, body: response.json() }
  }
  return withTenant(pool, tenant, (database) => look(database, probe, tenant, code), { schema: documentSchema, ...pluginOptionsFor(pool) })
    .then((body) => ({ status: 200, body: asJson(body) as Look }), (error: unknown) => ({ status: 500, body: { probe: { sqlState: sqlStateOf(error) }, documents: [] } }))
}

/**
 * pg's own protocol-level prepared statements (drizzle `.prepare(name)`) live on the connection
 * across requests, which is what makes them fast; route code can break them (DEALLOCATE) or take
 * their name (PREPARE), and B's next execution must still reach the real query. Only where named
 * statements survive between transactions (not behind PgBouncer 1.18).
 */
export async function runPreparedStatementCases (t: Test, db: TestDatabase, world: World, target: Target): Promise<void> {
  if (!target.namedStatements) return
  const [a, b] = world.tenants
  const hijack = `SELECT '${b}'::uuid, gen_random_uuid(), $1::text, 'first', 'decoy planted by A'`
  const cases: Array<{ name: string, statements: string[], order: 'B A B' | 'A B' }> = [
    { name: 'control: a clean request of A in between', statements: ['SELECT 1'], order: 'B A B' },
    { name: "DEALLOCATE ALL by A does not break B's named statement", statements: ['DEALLOCATE ALL'], order: 'B A B' },
    { name: "DEALLOCATE of B's statement by name does not break it", statements: ['DEALLOCATE documents_by_code'], order: 'B A B' },
    { name: "A's DEALLOCATE + PREPARE under the same name does not hijack B's next execution", statements: ['DEALLOCATE documents_by_code', `PREPARE documents_by_code (text) AS ${hijack}`], order: 'B A B' },
    { name: "A's PREPARE of a name B is about to use does not break B's first use", statements: [`PREPARE documents_by_code (text) AS ${hijack}`], order: 'A B' }
  ]
  for (const preparedCase of cases) {
    await t.test(`${target.name}: ${preparedCase.name}`, async (t) => {
      const pool = target.pool(t, { max: 1 })
      const { app } = await attackApp(t, pool, {
        leave: (request) => leave(dbOf(request), preparedCase.statements, 'commit'),
        async named (request) {
          const database = dbOf(request)
          const rows = await database.select().from(documents).where(eq(documents.code, sql.placeholder('code'))).prepare('documents_by_code').execute({ code: 'INV-1' })
          const { rows: [backend] } = await database.execute<{ pid: number }>(sql`SELECT pg_backend_pid() AS pid`)
          return { rows: rows.map((row) => `${row.tenantId}:${row.body}`), pid: backend?.pid }
        }
      })
      const expected = [`${b}:secret of tenant 1`]
      const pids: number[] = []
      if (preparedCase.order === 'B A B') {
        const first = await callAs(app, b, 'named')
        t.same(first.json().rows, expected, "B's first use")
        pids.push(first.json().pid)
      }
      await callAs(app, a, 'leave')
      const next = await callAs(app, b, 'named')
      t.equal(next.statusCode, 200, "B's named statement still works")
      t.same(next.json().rows, expected, 'and reaches the real query: B reads its own row, not a decoy')
      pids.push(next.json().pid)
      if (preparedCase.name.startsWith('control')) t.equal(pids[0], pids[1], 'a clean request keeps the connection, and with it the prepared statement')
      await db.assertNoLeaks(t, pool)
    })
  }
}

/**
 * pg_stat_activity shows every backend of the shared role to the others, with the text of its last
 * statement: the plugin's own statements must carry no tenant id, in flight or idle.
 */
export async function runActivityCases (t: Test, db: TestDatabase, world: World, target: Target): Promise<void> {
  const [a, b] = world.tenants
  // The superuser's hardening closes pg_stat_activity to the app role; where nobody ran it (a
  // managed database), PUBLIC can read it, and the plugin's own statements must still say nothing.
  const objects = ['SELECT ON pg_catalog.pg_stat_activity', 'EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer)']
  const openActivity = async (t: Test): Promise<void> => {
    await db.admin.query(objects.map((object) => `GRANT ${object} TO ${db.appRole}`).join('; '))
    t.teardown(() => db.admin.query(objects.map((object) => `REVOKE ${object} FROM ${db.appRole}`).join('; ')).then(() => {}))
  }
  const activity = (database: DocumentDatabase): Promise<unknown> =>
    database.execute(sql`SELECT * FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).then((result) => result.rows)

  await t.test(`${target.name}: B's read of pg_stat_activity shows no tenant id of A's idle connection`, async (t) => {
    const poolA = target.pool(t, { max: 1 })
    const poolB = target.pool(t, { max: 1 })
    const { app: appA } = await attackApp(t, poolA, {
      commit: (request) => dbOf(request).select().from(documents).where(eq(documents.tenantId, a)),
      async rollback (request) {
        await dbOf(request).select().from(documents).where(eq(documents.tenantId, a))
        throw new Error('A fails: its transaction rolls back')
      }
    })
    const { app: appB } = await attackApp(t, poolB, { activity: (request) => activity(dbOf(request)) })
    await openActivity(t)
    for (const [path, status] of [['commit', 200], ['rollback', 500]] as const) {
      t.equal((await callAs(appA, a, path)).statusCode, status, `A's request (${path})`)
      const seen = await callAs(appB, b, 'activity')
      t.equal(seen.statusCode, 200)
      t.ok((seen.json() as unknown[]).length > 0, "B does see A's backend in pg_stat_activity")
      t.notMatch(seen.body, a, "but no trace of A's tenant id")
    }
    await db.assertNoLeaks(t, poolA)
    await db.assertNoLeaks(t, poolB)
  })

  await t.test(`${target.name}: B's read of pg_stat_activity shows no tenant id of A's request in flight`, async (t) => {
    const poolA = target.pool(t, { max: 1 })
    const poolB = target.pool(t, { max: 1 })
    const held = gate()
    const reached = gate()
    const { app: appA } = await attackApp(t, poolA, {
      async hold (request) {
        await dbOf(request).select().from(documents)
        reached.open()
        await held.promise
        return 'done'
      }
    })
    const { app: appB } = await attackApp(t, poolB, { activity: (request) => activity(dbOf(request)) })
    await openActivity(t)
    const pending = callAs(appA, a, 'hold')
    await reached.promise
    const seen = await callAs(appB, b, 'activity')
    held.open()
    t.equal((await pending).statusCode, 200)
    t.equal(seen.statusCode, 200)
    t.notMatch(seen.body, a, "no trace of A's tenant id while A's transaction is open")
    await db.assertNoLeaks(t, poolA)
    await db.assertNoLeaks(t, poolB)
  })
}
