// Read and write isolation attacks: tenant A's route aims every kind of statement at tenant B's
// rows, whose natural keys (codes, slugs) are the same as A's. Each case states the exact reply,
// the SQLSTATE PostgreSQL answered with (when it refused), and what was committed afterwards as
// the superuser sees it. Shared by the direct run and the PgBouncer run.
import { count, countDistinct, eq, sql } from 'drizzle-orm'
import type { FastifyRequest } from 'fastify'
import type { FastifyTenantRlsSettings, TenantDatabase } from 'fastify-tenant-rls'
import type { Test } from 'tap'
import type { TestDatabase } from '../helpers/database.js'
import { attackApp, callAs, committed, documents, documentSchema, notes } from './documents.js'
import type { World } from './documents.js'
import type { Target } from './targets.js'

type DocumentDatabase = TenantDatabase<typeof documentSchema>

export function dbOf (request: FastifyRequest): DocumentDatabase {
  return request.db as unknown as DocumentDatabase
}

/** The two tenants of an attack and the ids of their documents. */
interface Sides { a: string, b: string, aDoc: string, bDoc: string, bDoc2: string }

interface IsolationCase {
  /** What the route attempts, and what it achieves. */
  name: string
  attack: (db: DocumentDatabase, sides: Sides) => Promise<unknown>
  status: number
  /** The exact reply body of a 2xx. */
  body?: (sides: Sides) => unknown
  /** The SQLSTATE PostgreSQL raised, for refused attempts. */
  sqlState?: string
  /** The error code of a refused attempt, when it is not QUERY_FAILED (sql-state-errors.ts). */
  code?: string
  /** Control cases that must change A's rows; everything else must commit nothing at all. */
  commits?: boolean
}

const tenantsAndCodes = (rows: Array<{ tenantId: string, code: string }>): string[] => rows.map((row) => `${row.tenantId}:${row.code}`).sort()

export const isolationCases: IsolationCase[] = [
  {
    name: "select by B's id returns nothing",
    attack: (db, s) => db.select().from(documents).where(eq(documents.id, s.bDoc)),
    status: 200,
    body: () => []
  },
  {
    name: 'select by a natural key both tenants use returns only A',
    attack: async (db) => tenantsAndCodes(await db.select().from(documents).where(eq(documents.code, 'INV-1'))),
    status: 200,
    body: (s) => [`${s.a}:INV-1`]
  },
  {
    name: "select naming B's tenant_id explicitly returns nothing",
    attack: (db, s) => db.select().from(documents).where(eq(documents.tenantId, s.b)),
    status: 200,
    body: () => []
  },
  {
    name: 'list returns only A',
    attack: async (db) => tenantsAndCodes(await db.select().from(documents)),
    status: 200,
    body: (s) => [`${s.a}:INV-1`, `${s.a}:INV-2`]
  },
  {
    name: 'join on document id alone (no tenant condition) pairs only A with A',
    attack: async (db) => (await db.select({ doc: documents.tenantId, note: notes.tenantId })
      .from(notes).innerJoin(documents, eq(notes.documentId, documents.id))).map((row) => `${row.doc}/${row.note}`),
    status: 200,
    body: (s) => [`${s.a}/${s.a}`]
  },
  {
    name: 'count and count(distinct tenant_id) see only A',
    attack: (db) => db.select({ rows: count(), tenants: countDistinct(documents.tenantId) }).from(documents),
    status: 200,
    body: () => [{ rows: 2, tenants: 1 }]
  },
  {
    name: 'UPDATE ... RETURNING by a shared natural key returns only A',
    attack: async (db) => tenantsAndCodes(await db.update(documents).set({ body: sql`${documents.body}` })
      .where(eq(documents.code, 'INV-2')).returning()),
    status: 200,
    body: (s) => [`${s.a}:INV-2`]
  },
  {
    name: "DELETE ... RETURNING B's id deletes and returns nothing",
    attack: (db, s) => db.delete(documents).where(eq(documents.id, s.bDoc)).returning(),
    status: 200,
    body: () => []
  },
  {
    name: "UPDATE B's row by id changes 0 rows",
    attack: async (db, s) => (await db.update(documents).set({ body: 'pwned' }).where(eq(documents.id, s.bDoc)).returning()).length,
    status: 200,
    body: () => 0
  },
  {
    name: "DELETE B's notes by B's tenant_id deletes 0 rows",
    attack: async (db, s) => (await db.delete(notes).where(eq(notes.tenantId, s.b)).returning()).length,
    status: 200,
    body: () => 0
  },
  {
    name: "INSERT ... ON CONFLICT (id) DO UPDATE aimed at B's row is refused by the USING check (42501)",
    attack: (db, s) => db.insert(documents).values({ tenantId: s.a, id: s.bDoc, code: 'X', slug: 'x', body: 'pwned' })
      .onConflictDoUpdate({ target: documents.id, set: { body: 'pwned' } }).returning(),
    status: 403,
    code: 'FST_TENANT_RLS_ROW_FORBIDDEN',
    sqlState: '42501'
  },
  {
    name: "INSERT ... ON CONFLICT (tenant_id, code) DO UPDATE with B's tenant_id is refused by WITH CHECK (42501)",
    attack: (db, s) => db.insert(documents).values({ tenantId: s.b, code: 'INV-1', slug: 'first', body: 'pwned' })
      .onConflictDoUpdate({ target: [documents.tenantId, documents.code], set: { body: 'pwned' } }).returning(),
    status: 403,
    code: 'FST_TENANT_RLS_ROW_FORBIDDEN',
    sqlState: '42501'
  },
  {
    name: "INSERT ... ON CONFLICT (id) DO NOTHING aimed at B's row inserts nothing and returns nothing",
    attack: (db, s) => db.insert(documents).values({ tenantId: s.a, id: s.bDoc, code: 'X', slug: 'x', body: 'pwned' })
      .onConflictDoNothing({ target: documents.id }).returning(),
    status: 200,
    body: () => []
  },
  {
    name: "MERGE matching B's id sees no match, and its INSERT branch hits B's primary key (23505)",
    attack: (db, s) => db.execute(sql`MERGE INTO documents d USING (SELECT ${s.bDoc}::uuid AS id) AS src ON d.id = src.id
      WHEN MATCHED THEN UPDATE SET body = 'pwned'
      WHEN NOT MATCHED THEN INSERT (tenant_id, id, code, slug, body) VALUES (${s.a}, src.id, 'M', 'm', 'merged')`),
    status: 409,
    code: 'FST_TENANT_RLS_CONFLICT',
    sqlState: '23505'
  },
  {
    name: "MERGE with only a MATCHED branch aimed at B's id changes 0 rows",
    attack: async (db, s) => (await db.execute(sql`MERGE INTO documents d USING (SELECT ${s.bDoc}::uuid AS id) AS src ON d.id = src.id
      WHEN MATCHED THEN UPDATE SET body = 'pwned'`)).rowCount,
    status: 200,
    body: () => 0
  },
  {
    name: "INSERT with B's tenant_id is refused by WITH CHECK (42501)",
    attack: (db, s) => db.insert(documents).values({ tenantId: s.b, code: 'NEW', slug: 'new', body: 'planted' }),
    status: 403,
    code: 'FST_TENANT_RLS_ROW_FORBIDDEN',
    sqlState: '42501'
  },
  {
    name: "UPDATE moving A's row to B's tenant_id is refused by WITH CHECK (42501)",
    attack: (db, s) => db.update(documents).set({ tenantId: s.b }).where(eq(documents.id, s.aDoc)),
    status: 403,
    code: 'FST_TENANT_RLS_ROW_FORBIDDEN',
    sqlState: '42501'
  },
  {
    name: "a note pointing at B's document fails the tenant-scoped foreign key (23503)",
    attack: (db, s) => db.insert(notes).values({ tenantId: s.a, documentId: s.bDoc2, text: 'pointer' }),
    status: 409,
    code: 'FST_TENANT_RLS_CONFLICT',
    sqlState: '23503'
  },
  {
    name: 'TRUNCATE is refused (42501)',
    attack: (db) => db.execute(sql`TRUNCATE documents CASCADE`),
    status: 500,
    sqlState: '42501'
  },
  {
    name: 'COPY FROM STDIN is refused on an RLS table (0A000)',
    attack: (db) => db.execute(sql`COPY documents FROM STDIN`),
    status: 500,
    sqlState: '0A000'
  },
  {
    name: 'COPY TO PROGRAM is refused (42501)',
    attack: (db) => db.execute(sql`COPY (SELECT 1) TO PROGRAM 'true'`),
    status: 500,
    sqlState: '42501'
  },
  {
    name: 'CREATE TABLE is refused (42501)',
    attack: (db) => db.execute(sql`CREATE TABLE stolen AS SELECT * FROM documents`),
    status: 500,
    sqlState: '42501'
  },
  {
    name: 'ALTER TABLE ... DISABLE ROW LEVEL SECURITY is refused (42501)',
    attack: (db) => db.execute(sql`ALTER TABLE documents DISABLE ROW LEVEL SECURITY`),
    status: 500,
    sqlState: '42501'
  },
  {
    name: 'DROP POLICY is refused (42501)',
    attack: (db) => db.execute(sql`DROP POLICY tenant_isolation ON documents`),
    status: 500,
    sqlState: '42501'
  },
  {
    name: 'control: ON CONFLICT DO UPDATE on its own key updates A only',
    attack: async (db, s) => tenantsAndCodes(await db.insert(documents).values({ tenantId: s.a, code: 'INV-1', slug: 'first', body: 'updated by A' })
      .onConflictDoUpdate({ target: [documents.tenantId, documents.code], set: { body: 'updated by A' } }).returning()),
    status: 200,
    body: (s) => [`${s.a}:INV-1`],
    commits: true
  }
]

/** The two tenants of `world`, a pool of `target`, and one route per case, as both runners serve them. */
function casesOf (t: Test, world: World, target: Target): { a: string, sides: Sides, pool: ReturnType<Target['pool']>, attacks: Record<string, (request: FastifyRequest) => Promise<unknown>> } {
  const [a, b] = world.tenants
  const sides: Sides = { a, b, aDoc: world.ids[a]?.['INV-1'] ?? '', bDoc: world.ids[b]?.['INV-1'] ?? '', bDoc2: world.ids[b]?.['INV-2'] ?? '' }
  const attacks = Object.fromEntries(isolationCases.map((attackCase, index) => [
    `case-${index}`,
    (request: FastifyRequest) => attackCase.attack(dbOf(request), sides)
  ]))
  return { a, sides, pool: target.pool(t), attacks }
}

/** A way of opening the plugin's transactions the cases run again under (`openWith: 'set-local'`), named in each subtest. */
export interface IsolationVariant {
  name: string
  options: Partial<FastifyTenantRlsSettings>
}

/** Registers every isolation case as a subtest of `t`, against `target`, with the plugin's options of `variant` if given. */
export async function runIsolationCases (t: Test, db: TestDatabase, world: World, target: Target, variant?: IsolationVariant): Promise<void> {
  const { a, sides, pool, attacks } = casesOf(t, world, target)
  const { app, sqlStates } = await attackApp(t, pool, attacks, variant?.options)
  const label = variant === undefined ? target.name : `${target.name}, ${variant.name}`

  for (const [index, attackCase] of isolationCases.entries()) {
    await t.test(`${label}: ${attackCase.name}`, async (t) => {
      const before = await committed(db)
      sqlStates.length = 0
      const response = await callAs(app, a, `case-${index}`)
      t.equal(response.statusCode, attackCase.status, 'status')
      if (attackCase.body !== undefined) t.same(response.json(), attackCase.body(sides), 'reply')
      if (attackCase.status >= 400) t.equal(response.json().code, attackCase.code ?? 'FST_TENANT_RLS_QUERY_FAILED', 'sanitized error code')
      t.same(sqlStates, attackCase.sqlState === undefined ? [] : [attackCase.sqlState], 'SQLSTATE')
      const after = await committed(db)
      const others = (snapshot: typeof after): unknown => ({
        documents: snapshot.documents.filter((row) => row.tenant_id !== a),
        notes: snapshot.notes
      })
      t.same(others(after), others(before), "B's rows and every note are exactly as before")
      if (attackCase.commits !== true) t.same(after, before, 'nothing was committed')
      else t.notSame(after, before, "A's own row was changed")
      await db.assertNoLeaks(t, pool)
    })
  }

  await t.test(`${label}: one prepared statement reused by A, B, A, B on one connection under force_generic_plan returns each tenant only its rows`, async (t) => {
    const single = target.pool(t, { max: 1 })
    const { app } = await attackApp(t, single, {
      async prepared (request) {
        const db = dbOf(request)
        // SET LOCAL: the plan must stay generic whoever executes it, and the setting dies with the transaction.
        await db.execute(sql`SET LOCAL plan_cache_mode = force_generic_plan`)
        const query = db.select().from(documents).where(eq(documents.code, sql.placeholder('code')))
        // PgBouncer 1.18 cannot carry a named statement from one transaction to the next.
        const rows = await (target.namedStatements ? query.prepare('documents_by_code') : query).execute({ code: 'INV-1' })
        const plans = await db.execute<{ generic: number }>(sql`SELECT generic_plans::int AS generic FROM pg_prepared_statements WHERE name = 'documents_by_code'`)
        return { tenants: rows.map((row) => row.tenantId), genericPlans: plans.rows[0]?.generic ?? null }
      }
    }, variant?.options)
    for (let round = 0; round < 8; round++) {
      const tenant = round % 2 === 0 ? a : sides.b
      const response = await callAs(app, tenant, 'prepared')
      t.equal(response.statusCode, 200)
      t.same(response.json(), { tenants: [tenant], genericPlans: target.namedStatements ? round + 1 : null }, `round ${round}`)
    }
    await db.assertNoLeaks(t, single)
  })
}

/**
 * Every isolation case again with each query sent alone in one round trip (singleRoundTrip): a
 * read-only mode, so whatever the case expects, nothing at all may be committed, and a 2xx reply
 * must be exactly the one the transaction mode gives (the reads); everything else is refused.
 */
const SINGLE_ROUND_TRIP_REFUSALS = new Set(['FST_TENANT_RLS_READ_ONLY_TRANSACTION', 'FST_TENANT_RLS_SINGLE_ROUND_TRIP_REFUSED'])

export async function runIsolationCasesSingleRoundTrip (t: Test, db: TestDatabase, world: World, target: Target): Promise<void> {
  const { a, sides, pool, attacks } = casesOf(t, world, target)
  const { app } = await attackApp(t, pool, attacks, { singleRoundTrip: true })
  for (const [index, attackCase] of isolationCases.entries()) {
    await t.test(`${target.name}, single round trip: ${attackCase.name}`, async (t) => {
      const before = await committed(db)
      const response = await callAs(app, a, `case-${index}`)
      if (response.statusCode < 400) {
        t.ok(attackCase.status < 400 && attackCase.commits !== true && attackCase.body !== undefined, `a 2xx only for a read (${response.statusCode})`)
        if (attackCase.body !== undefined) t.same(response.json(), attackCase.body(sides), 'the same reply as in a transaction')
      } else {
        // Refused for what the mode refuses, never for a failure of the mode itself.
        t.ok(SINGLE_ROUND_TRIP_REFUSALS.has(response.json().code), `refused as a write or a statement the mode does not send (${String(response.json().code)})`)
      }
      t.same(await committed(db), before, 'nothing was committed')
      await db.assertNoLeaks(t, pool)
    })
  }
}

/** Stamp of what a request saw: the setting, and the distinct tenants of the rows it could read. */
export async function stamp (db: DocumentDatabase): Promise<{ setting: string, tenants: string[] }> {
  const setting = await db.execute<{ setting: string }>(sql`SELECT current_setting('app.current_tenant_id', true) AS setting`)
  const rows = await db.selectDistinct({ tenantId: documents.tenantId }).from(documents).where(eq(documents.code, 'INV-1'))
  return { setting: String(setting.rows[0]?.setting), tenants: rows.map((row) => row.tenantId) }
}
