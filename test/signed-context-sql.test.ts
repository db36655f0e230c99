// The signed tenant context at the SQL level, on a real PostgreSQL: tenant A's transaction is
// opened as the plugin opens it (tenant + signature), then route SQL tries every way of becoming
// tenant B. Each attack runs against both policy forms on the same rows: the plain form
// (current_setting) lets it read B's rows, the signed form (tenant_rls.current_tenant()) shows it
// nothing and refuses its writes. Then replay (another connection, after expiry), what the
// application role can reach of the keys, key rotation, and the plan of the signed policy.
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import t from 'tap'
import type { Test } from 'tap'
import { installSigningKey, removeSigningKey, signedContextSql } from 'fastify-tenant-rls/schema'
import { backendPidOf } from '../src/signed-context/backend-pid.js'
import { SIGNATURE_SETTING, signTenantContext } from '../src/signed-context/signer.js'
import { createSignedWorld, newKey, NOTES_PER_TENANT, openSigned, resolvedKey, SETTING, visibleTenants } from './helpers/signed-context.js'

const world = await createSignedWorld(t, { fillers: 38 })
const { db, a, b } = world
const pool = db.appPool()
t.afterEach(async (t) => db.assertNoLeaks(t, pool))

/** Runs `work` in a transaction of the app role opened for A as the plugin opens it; always rolled back. */
async function asA<T> (work: (client: pg.PoolClient, signature: string) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const signature = await openSigned(client, world, a)
    return await work(client, signature)
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
}

/** Tries to write B's and A's rows in a savepoint each; returns the SQLSTATE or the row count of each attempt. */
async function writes (client: pg.ClientBase, table: string): Promise<Record<string, string | number>> {
  const attempts: Record<string, string> = {
    'insert for B': `INSERT INTO ${table} (tenant_id, id, body) VALUES ('${b}', 1000, 'planted')`,
    'insert by default': `INSERT INTO ${table} (id, body) VALUES (1001, 'planted')`,
    'update B': `UPDATE ${table} SET body = 'changed' WHERE tenant_id = '${b}'`,
    'delete B': `DELETE FROM ${table} WHERE tenant_id = '${b}'`
  }
  const outcome: Record<string, string | number> = {}
  for (const [name, statement] of Object.entries(attempts)) {
    await client.query('SAVEPOINT attempt')
    try {
      outcome[name] = (await client.query(statement)).rowCount ?? 0
      await client.query('RELEASE SAVEPOINT attempt')
    } catch (error) {
      outcome[name] = (error as { code?: string }).code ?? 'error'
      await client.query('ROLLBACK TO SAVEPOINT attempt')
    }
  }
  return outcome
}

interface Forgery {
  name: string
  /** Statements route SQL runs in A's transaction; %B% is B's id, %SIG% A's own signature. */
  statements: string[]
  /** Statements after the reads (the savepoint switch rolls its savepoint back). */
  after?: string[]
}

// A function a careless migration left behind, SECURITY DEFINER and callable by the app role.
await db.asOwner(`CREATE FUNCTION public.use_tenant(tenant text) RETURNS text LANGUAGE sql SECURITY DEFINER AS $$ SELECT set_config('${SETTING}', tenant, true) $$;
  GRANT EXECUTE ON FUNCTION public.use_tenant(text) TO ${db.appRole}`)

const forgeries: Forgery[] = [
  { name: 'SET', statements: [`SET ${SETTING} = '%B%'`] },
  { name: 'SET LOCAL', statements: [`SET LOCAL ${SETTING} = '%B%'`] },
  { name: 'set_config, transaction-local', statements: [`SELECT set_config('${SETTING}', '%B%', true)`] },
  { name: 'set_config, session', statements: [`SELECT set_config('${SETTING}', '%B%', false)`] },
  { name: 'the savepoint switch: set B in a savepoint, read, roll the savepoint back', statements: ['SAVEPOINT switch', `SELECT set_config('${SETTING}', '%B%', true)`], after: ['ROLLBACK TO SAVEPOINT switch'] },
  { name: 'in a DO block', statements: [`DO $$ BEGIN PERFORM set_config('${SETTING}', '%B%', true); END $$`] },
  { name: 'through a SECURITY DEFINER function', statements: ["SELECT public.use_tenant('%B%')"] },
  { name: 'B beside A\'s own signature, set again', statements: [`SELECT set_config('${SETTING}', '%B%', true), set_config('${SIGNATURE_SETTING}', '%SIG%', true)`] },
  { name: 'A\'s signature with its tenant field rewritten for B (no such field: the MAC covers the setting)', statements: [`SELECT set_config('${SETTING}', '%B%', true), set_config('${SIGNATURE_SETTING}', regexp_replace('%SIG%', '[0-9a-f]{64}$', repeat('0', 64)), true)`] },
  { name: 'a made-up signature under the installed key id', statements: [`SELECT set_config('${SETTING}', '%B%', true), set_config('${SIGNATURE_SETTING}', 'v1.k1.99999999999999.' || repeat('ab', 32), true)`] },
  { name: 'a signature under a key id that is not installed', statements: [`SELECT set_config('${SETTING}', '%B%', true), set_config('${SIGNATURE_SETTING}', 'v1.nokey.99999999999999.' || repeat('ab', 32), true)`] },
  { name: 'a malformed signature (denied, no error)', statements: [`SELECT set_config('${SETTING}', '%B%', true), set_config('${SIGNATURE_SETTING}', 'v1..'' OR 1=1 --', true)`] },
  { name: 'an expiry too long for a bigint (denied, no overflow error)', statements: [`SELECT set_config('${SETTING}', '%B%', true), set_config('${SIGNATURE_SETTING}', 'v1.k1.' || repeat('9', 20) || '.' || repeat('ab', 32), true)`] },
  { name: 'a MAC that is not hex (denied, no decode error)', statements: [`SELECT set_config('${SETTING}', '%B%', true), set_config('${SIGNATURE_SETTING}', 'v1.k1.99999999999999.' || repeat('zz', 32), true)`] },
  { name: 'the signature reset to empty', statements: [`SELECT set_config('${SETTING}', '%B%', true)`, `RESET ${SIGNATURE_SETTING}`] }
]

for (const forgery of forgeries) {
  t.test(`forgery: ${forgery.name}`, async (t) => {
    await asA(async (client, signature) => {
      t.same(await visibleTenants(client, 'signed_notes'), [a], 'before: the signed policy shows A\'s rows')
      t.same(await visibleTenants(client, 'plain_notes'), [a], 'before: the plain policy shows A\'s rows')
      for (const statement of forgery.statements) await client.query(statement.replaceAll('%B%', b).replaceAll('%SIG%', signature))

      t.same(await visibleTenants(client, 'plain_notes'), [b], 'the plain policy: the route reads B\'s rows')
      t.same(await visibleTenants(client, 'signed_notes'), [], 'the signed policy: the route reads nothing')
      const plain = await writes(client, 'plain_notes')
      const signed = await writes(client, 'signed_notes')
      t.same(plain, { 'insert for B': 1, 'insert by default': 1, 'update B': NOTES_PER_TENANT + 2, 'delete B': NOTES_PER_TENANT + 2 }, 'the plain policy: B\'s rows are written')
      t.same(signed, { 'insert for B': '42501', 'insert by default': '42501', 'update B': 0, 'delete B': 0 }, 'the signed policy: nothing is written')

      for (const statement of forgery.after ?? []) await client.query(statement)
      if (forgery.after !== undefined) {
        // Back to A: a check of the setting at commit would pass, which is why the read above mattered.
        const { rows } = await client.query<{ tenant: string }>('SELECT current_setting($1) AS tenant', [SETTING])
        t.equal(rows[0]?.tenant, a, 'after the rollback to the savepoint the setting reads A again')
        t.same(await visibleTenants(client, 'signed_notes'), [a], 'and the signed context is A\'s again')
      }
    })
  })
}

t.test('the plain and the signed policy agree while nobody tampers: each tenant sees exactly its rows', async (t) => {
  for (const tenant of [a, b]) {
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      await openSigned(client, world, tenant)
      t.same(await visibleTenants(client, 'signed_notes'), [tenant])
      const { rows } = await client.query<{ count: number }>('SELECT count(*)::int AS count FROM signed_notes')
      t.equal(rows[0]?.count, NOTES_PER_TENANT)
      await client.query("INSERT INTO signed_notes (id, body) VALUES (5000, 'own row')")
      t.same(await visibleTenants(client, 'signed_notes'), [tenant], 'an insert by default lands in the signed tenant')
    } finally {
      await client.query('ROLLBACK')
      client.release()
    }
  }
})

t.test('replay: A\'s signature, read on its connection, opens nothing on another connection', async (t) => {
  const [first, second] = [await pool.connect(), await pool.connect()]
  try {
    await first.query('BEGIN')
    const signature = await openSigned(first, world, a)
    t.same(await visibleTenants(first, 'signed_notes'), [a])
    await second.query('BEGIN')
    await second.query('SELECT set_config($1, $2, true), set_config($3, $4, true)', [SETTING, a, SIGNATURE_SETTING, signature])
    t.same(await visibleTenants(second, 'signed_notes'), [], 'the other backend verifies the pid and denies')
    t.same(await visibleTenants(second, 'plain_notes'), [a], 'the plain policy takes the copied setting')
  } finally {
    for (const client of [first, second]) {
      await client.query('ROLLBACK')
      client.release()
    }
  }
})

t.test('replay after expiry: a signature whose expiry has passed opens nothing', async (t) => {
  const client = await pool.connect()
  try {
    // The database's clock decides: the expiry is taken from it, not from this process.
    const { rows } = await client.query<{ now: number }>('SELECT (extract(epoch FROM now()) * 1000)::float8 AS now')
    const dbNow = Math.floor(rows[0]?.now ?? 0)
    await client.query('BEGIN')
    await openSigned(client, world, a, { expiresAt: dbNow - 1 })
    t.same(await visibleTenants(client, 'signed_notes'), [], 'expired a millisecond before this transaction began: denied')
    await openSigned(client, world, a, { expiresAt: dbNow + 60_000 })
    t.same(await visibleTenants(client, 'signed_notes'), [a], 'the same context with a live expiry: allowed')
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
})

t.test('A\'s own valid signature with a field appended opens nothing: the format is exact', async (t) => {
  await asA(async (client, signature) => {
    await client.query('SELECT set_config($1, $2, true)', [SIGNATURE_SETTING, `${signature}.x`])
    t.same(await visibleTenants(client, 'signed_notes'), [])
  })
})

t.test('a signature for this backend with the tenant moved into the expiry field opens nothing, without an error, where the tenant setting was never set', async (t) => {
  // Without the tenant, concat_ws drops its line, so "<expiry> LF <A>" in the expiry field rebuilds
  // A's signed message: the MAC matches, and only the view's demand for a tenant keeps the expiry
  // field's cast to bigint from failing the statement. The setting reads NULL only on a connection
  // that never set it (after that it reads ''), so this runs on a fresh one, with a signature made
  // for its backend as if it had leaked.
  const fresh = db.appPool({ max: 1 })
  const client = await fresh.connect()
  t.teardown(async () => {
    client.release(true)
    await fresh.end()
  })
  const [version, keyId, expiry, mac] = signTenantContext({ key: world.context.signingKey, tenantId: a, backendPid: backendPidOf(client) ?? 0, expiresAt: Date.now() + 60_000 }).value.split('.')
  await client.query('BEGIN')
  await client.query('SELECT set_config($1, $2, true)', [SIGNATURE_SETTING, `${version}.${keyId}.${expiry}\n${a}.${mac}`])
  t.equal((await client.query('SELECT current_setting($1, true) AS tenant', [SETTING])).rows[0]?.tenant, null, 'the tenant setting reads NULL')
  t.same(await visibleTenants(client, 'signed_notes'), [])
  await client.query('ROLLBACK')
})

t.test('a signature for the right pid made with an unknown secret opens nothing', async (t) => {
  await asA(async (client) => {
    await openSigned(client, world, a, { key: resolvedKey({ id: 'k1', secret: randomBytes(48) }) })
    t.same(await visibleTenants(client, 'signed_notes'), [])
  })
})

async function sqlState (client: pg.ClientBase, statement: string): Promise<string | undefined> {
  await client.query('SAVEPOINT probe')
  try {
    await client.query(statement)
    await client.query('RELEASE SAVEPOINT probe')
    return undefined
  } catch (error) {
    await client.query('ROLLBACK TO SAVEPOINT probe')
    return (error as { code?: string }).code
  }
}

t.test('the application role cannot read the keys, plant one, or become the owner', async (t) => {
  await asA(async (client) => {
    const refused = {
      'read the keys': await sqlState(client, 'SELECT * FROM tenant_rls.signing_keys'),
      'read one column': await sqlState(client, 'SELECT inner_pad FROM tenant_rls.signing_keys'),
      'insert a key': await sqlState(client, "INSERT INTO tenant_rls.signing_keys (id, inner_pad, outer_pad) VALUES ('evil', repeat('a', 64)::bytea, repeat('a', 64)::bytea)"),
      'install a key with add_key': await sqlState(client, `SELECT tenant_rls.add_key('evil', '\\x${randomBytes(48).toString('hex')}'::bytea)`),
      'remove a key': await sqlState(client, "SELECT tenant_rls.remove_key('k1')"),
      'become the owner': await sqlState(client, `SET ROLE ${db.ownerRole}`),
      'replace the function': await sqlState(client, 'CREATE OR REPLACE FUNCTION tenant_rls.current_tenant() RETURNS text LANGUAGE sql AS $$ SELECT current_setting(\'app.current_tenant_id\') $$'),
      'replace the view': await sqlState(client, 'CREATE OR REPLACE VIEW tenant_rls.verified_tenant AS SELECT current_setting(\'app.current_tenant_id\') AS tenant_id'),
      'write through the view': await sqlState(client, "INSERT INTO tenant_rls.verified_tenant (tenant_id) VALUES ('x')"),
      'shadow it in its schema': await sqlState(client, 'CREATE FUNCTION tenant_rls.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT $1 $$')
    }
    t.same(refused, {
      'read the keys': '42501',
      'read one column': '42501',
      'insert a key': '42501',
      'install a key with add_key': '42501',
      'remove a key': '42501',
      'become the owner': '42501',
      'replace the function': '42501',
      'replace the view': '42501',
      // Not even a privilege question: a view over a join is not updatable.
      'write through the view': '55000',
      'shadow it in its schema': '42501'
    })
    // Nothing in the schema signs: the role may call only current_tenant(), and read only the view it reads.
    const { rows } = await client.query<{ fn: string }>(`SELECT p.oid::regprocedure::text AS fn FROM pg_proc p
      WHERE p.pronamespace = 'tenant_rls'::regnamespace AND has_function_privilege(p.oid, 'EXECUTE') ORDER BY 1`)
    t.same(rows.map((row) => row.fn), ['tenant_rls.current_tenant()'])
    const { rows: readable } = await client.query<{ relation: string }>(`SELECT c.oid::regclass::text AS relation FROM pg_class c
      WHERE c.relnamespace = 'tenant_rls'::regnamespace AND has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') ORDER BY 1`)
    t.same(readable.map((row) => row.relation), ['tenant_rls.verified_tenant'])
  })
})

t.test('key rotation: while both keys are installed both verify; the removed key stops at the next statement', async (t) => {
  const next = newKey('k2')
  await installSigningKey(world.ownerPool, next)
  t.teardown(async () => { await removeSigningKey(world.ownerPool, 'k2') })
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    await openSigned(client, world, a, { key: resolvedKey(next) })
    t.same(await visibleTenants(client, 'signed_notes'), [a], 'the new key verifies')
    await openSigned(client, world, a)
    t.same(await visibleTenants(client, 'signed_notes'), [a], 'the old key still verifies')
    t.equal(await removeSigningKey(world.ownerPool, 'k1'), true, 'the owner removes the old key')
    t.same(await visibleTenants(client, 'signed_notes'), [], 'the old key no longer verifies, even in a transaction opened with it')
    await openSigned(client, world, a, { key: resolvedKey(next) })
    t.same(await visibleTenants(client, 'signed_notes'), [a], 'the new key goes on verifying')
  } finally {
    await client.query('ROLLBACK')
    client.release()
    await installSigningKey(world.ownerPool, world.key)
  }
})

t.test('key installation refuses what would weaken or confuse verification', async (t) => {
  const short = `SELECT tenant_rls.add_key('short', '\\x${randomBytes(31).toString('hex')}'::bytea)`
  await t.rejects(world.ownerPool.query(short), { code: '22023', message: /at least 32 bytes/ }, 'a short secret, even through SQL')
  await t.rejects(world.ownerPool.query(`SELECT tenant_rls.add_key('bad.id', '\\x${randomBytes(32).toString('hex')}'::bytea)`), { code: '23514' }, 'an id with the field separator')
  await t.rejects(installSigningKey(world.ownerPool, { id: 'k1', secret: randomBytes(48) }), { code: '23505' }, 'an id already installed')
  await t.rejects(installSigningKey(world.ownerPool, { id: 'k9', secret: 'too short' }), { code: 'FST_TENANT_RLS_INVALID_OPTION' }, 'a short secret, before it reaches the database')
  t.equal(await removeSigningKey(world.ownerPool, 'never-installed'), false)
})

t.test('a key longer than the HMAC block is hashed first on both sides', async (t) => {
  const long = { id: 'long', secret: randomBytes(100) }
  await installSigningKey(world.ownerPool, long)
  t.teardown(async () => { await removeSigningKey(world.ownerPool, 'long') })
  await asA(async (client) => {
    await openSigned(client, world, a, { key: resolvedKey(long) })
    t.same(await visibleTenants(client, 'signed_notes'), [a])
  })
})

interface PlanNode {
  'Node Type': string
  'Index Cond'?: string
  'Index Name'?: string
  'Subplan Name'?: string
  'Parent Relationship'?: string
  'Actual Loops'?: number
  Plans?: PlanNode[]
}

function nodes (plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)]
}

async function explain (t: Test, client: pg.ClientBase, query: string): Promise<PlanNode[]> {
  const { rows } = await client.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(`EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF, FORMAT JSON) ${query}`)
  const plan = rows[0]?.['QUERY PLAN'][0]?.Plan
  if (plan === undefined) t.fail('no plan')
  return plan === undefined ? [] : nodes(plan)
}

t.test('the signed policy is an InitPlan run once per statement, and an index condition', async (t) => {
  await asA(async (client) => {
    for (const query of ['SELECT body FROM signed_notes', 'SELECT body FROM signed_notes WHERE id = 7', 'UPDATE signed_notes SET body = body']) {
      const plan = await explain(t, client, query)
      const initPlans = plan.filter((node) => node['Parent Relationship'] === 'InitPlan')
      t.ok(initPlans.length >= 1, `${query}: the policy's subquery is an InitPlan`)
      t.ok(initPlans.every((node) => node['Actual Loops'] === 1), `${query}: each InitPlan ran once`)
      const scan = plan.find((node) => node['Index Name'] === 'signed_notes_tenant_id_id_pk')
      t.match(scan?.['Index Cond'], /tenant_id = \(InitPlan \d+\)/, `${query}: the index on (tenant_id, id) is searched with the verified tenant`)
    }
  })
})

t.test('signedContextSql run by the owner role itself gives the same ownership as when a superuser runs it', async (t) => {
  const { rows } = await db.admin.query<{ owner: string, object: string }>(`
    SELECT pg_get_userbyid(nspowner)::text AS owner, 'schema' AS object FROM pg_namespace WHERE nspname = 'tenant_rls'
    UNION ALL SELECT pg_get_userbyid(relowner)::text, relname::text FROM pg_class WHERE relnamespace = 'tenant_rls'::regnamespace AND relkind IN ('r', 'v')
    UNION ALL SELECT pg_get_userbyid(proowner)::text, proname::text FROM pg_proc WHERE pronamespace = 'tenant_rls'::regnamespace ORDER BY 2`)
  t.same(rows, ['add_key', 'current_tenant', 'remove_key', 'schema', 'signing_keys', 'verified_tenant'].map((object) => ({ owner: db.ownerRole, object })), 'the superuser-run migration left everything to the owner')
  t.throws(() => signedContextSql({ role: db.appRole, owner: db.appRole }), { code: 'FST_TENANT_RLS_INVALID_OPTION' }, 'the app role cannot own the keys')
  t.throws(() => signedContextSql({ role: db.appRole, owner: 'Owner; DROP' }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
})
