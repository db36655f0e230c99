// The startup check of signed mode against a real database: a correct installation passes, and
// each way a database can be wrong for signed mode (a superuser-run migration's owner, an owner
// that bypasses RLS or that the app role can become, keys the app role can reach, policies that do
// not call the verifying function, a function or view replaced by one that verifies nothing, a view
// that reads the keys with the reader's rights, a key never installed, a pooler in between, a
// skewed clock) is
// refused with its fix, or, for a key being retired, reported as a warning.
import t from 'tap'
import type { Test } from 'tap'
import { installSigningKey, removeSigningKey } from 'fastify-tenant-rls/schema'
import { checkSignedContext, inspectSignedContext } from '../src/signed-context/inspection.js'
import type { SignedContextInspection } from '../src/signed-context/inspection.js'
import { validateSignedContext } from '../src/signed-context/options.js'
import { pgBouncerTarget } from './adversarial/targets.js'
import { createSignedWorld, newKey, SETTING } from './helpers/signed-context.js'
import { DIE, installDeath, releases } from './helpers/backend-death.js'

// Run by the owner role itself this time (signed-context-sql.test.ts runs it as a superuser).
const world = await createSignedWorld(t, { migrateAs: 'owner' })
const { db, context } = world
const pool = db.appPool()
// The plain table is the other test file's control; here every table the app role uses is signed.
await db.asOwner(`REVOKE ALL ON plain_notes FROM ${db.appRole}`)
t.afterEach(async (t) => db.assertNoLeaks(t, pool))
// The view and the function as signedContextSql made them, to put back after a test replaced one.
const { rows: [made] } = await db.admin.query<{ view: string, fn: string }>(
  "SELECT pg_get_viewdef('tenant_rls.verified_tenant'::regclass) AS view, pg_get_functiondef('tenant_rls.current_tenant()'::regprocedure) AS fn")

/** Applies `change` as the superuser, inspects, then applies `undo`, whatever happened. */
async function inspectedWith (t: Test, change: string, undo: string): Promise<SignedContextInspection> {
  await db.admin.query(change)
  t.teardown(async () => { await db.admin.query(undo) })
  return inspectSignedContext(pool, context, SETTING)
}

function problemsOf (inspection: SignedContextInspection): string[] {
  return inspection.problems.map(({ problem }) => problem)
}

t.test('a database set up with signedContextSql and a key installed passes', async (t) => {
  t.same(await inspectSignedContext(pool, context, SETTING), { problems: [], warnings: [] })
  await t.resolves(checkSignedContext(pool, context, SETTING, () => t.fail('no warning expected')))
})

const refusals: Array<{ name: string, change: string, undo: string, problem: RegExp, fix: RegExp }> = [
  {
    name: 'a verifying function owned by a superuser (a hand-written migration run as one)',
    change: 'ALTER FUNCTION tenant_rls.current_tenant() OWNER TO CURRENT_USER',
    undo: `ALTER FUNCTION tenant_rls.current_tenant() OWNER TO ${db.ownerRole}`,
    problem: /tenant_rls\.current_tenant\(\) is owned by the superuser "postgres"/,
    fix: /ALTER FUNCTION tenant_rls\.current_tenant\(\) OWNER TO/
  },
  {
    name: 'a verifying view owned by a superuser',
    change: 'ALTER VIEW tenant_rls.verified_tenant OWNER TO CURRENT_USER',
    undo: `ALTER VIEW tenant_rls.verified_tenant OWNER TO ${db.ownerRole}`,
    problem: /tenant_rls\.verified_tenant is owned by the superuser "postgres"/,
    fix: /ALTER VIEW tenant_rls\.verified_tenant OWNER TO/
  },
  {
    name: 'an owner with BYPASSRLS',
    change: `ALTER ROLE ${db.ownerRole} BYPASSRLS`,
    undo: `ALTER ROLE ${db.ownerRole} NOBYPASSRLS`,
    problem: /has BYPASSRLS/,
    fix: /OWNER TO/
  },
  {
    name: 'an app role that is a member of the owner',
    change: `GRANT ${db.ownerRole} TO ${db.appRole}`,
    undo: `REVOKE ${db.ownerRole} FROM ${db.appRole}`,
    problem: /is, or is a member of, ".*_owner".*replace it or read the keys/,
    fix: /is not a member of/
  },
  {
    name: 'one column of the key table granted to the app role',
    change: `GRANT SELECT (inner_pad) ON tenant_rls.signing_keys TO ${db.appRole}`,
    undo: `REVOKE SELECT (inner_pad) ON tenant_rls.signing_keys FROM ${db.appRole}`,
    problem: /holds privileges on tenant_rls\.signing_keys/,
    fix: /REVOKE ALL ON TABLE tenant_rls\.signing_keys/
  },
  {
    name: 'add_key executable by PUBLIC',
    change: 'GRANT EXECUTE ON FUNCTION tenant_rls.add_key(text, bytea) TO PUBLIC',
    undo: 'REVOKE EXECUTE ON FUNCTION tenant_rls.add_key(text, bytea) FROM PUBLIC',
    problem: /may execute tenant_rls\.add_key\(text,bytea\).*install a key/,
    fix: /REVOKE ALL ON FUNCTION tenant_rls\.add_key/
  },
  {
    name: 'a table with the plain policy that the app role uses',
    change: `GRANT SELECT ON plain_notes TO ${db.appRole}`,
    undo: `REVOKE SELECT ON plain_notes FROM ${db.appRole}`,
    problem: /tenant_isolation on plain_notes do not call tenant_rls\.current_tenant\(\)/,
    fix: /signedContext: true/
  },
  {
    name: 'a policy that calls the function but also reads the setting',
    change: `CREATE POLICY sneaky ON signed_notes USING (tenant_rls.current_tenant() IS NOT NULL OR tenant_id = current_setting('${SETTING}')::uuid)`,
    undo: 'DROP POLICY sneaky ON signed_notes',
    problem: /sneaky on signed_notes read the setting 'app\.current_tenant_id' themselves/,
    fix: /only through tenant_rls\.current_tenant\(\)$/
  },
  {
    name: 'a verifying view that reads the keys with the reader\'s rights (security_invoker)',
    change: 'ALTER VIEW tenant_rls.verified_tenant SET (security_invoker = true)',
    undo: 'ALTER VIEW tenant_rls.verified_tenant RESET (security_invoker)',
    problem: /tenant_rls\.current_tenant\(\) raised 42501/,
    fix: /ALTER VIEW tenant_rls\.verified_tenant RESET \(security_invoker\)/
  },
  {
    name: 'a verifying view replaced by one that verifies nothing',
    change: `CREATE OR REPLACE VIEW tenant_rls.verified_tenant AS SELECT nullif(current_setting('${SETTING}', true), '') AS tenant_id`,
    undo: `CREATE OR REPLACE VIEW tenant_rls.verified_tenant AS ${made?.view ?? ''}`,
    problem: /hands back a tenant whose signature is a forgery/,
    fix: /CREATE OR REPLACE both with the definitions signedContextSql writes/
  },
  {
    name: 'a verifying function replaced by one that reads the setting',
    change: `CREATE OR REPLACE FUNCTION tenant_rls.current_tenant() RETURNS text LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('${SETTING}', true), '') $$`,
    undo: made?.fn ?? '',
    problem: /hands back a tenant whose signature is a forgery/,
    fix: /signedContextSql/
  },
  {
    name: 'no verifying function or view the app role can see',
    change: 'ALTER SCHEMA tenant_rls RENAME TO tenant_rls_moved',
    undo: 'ALTER SCHEMA tenant_rls_moved RENAME TO tenant_rls',
    problem: /tenant_rls\.current_tenant\(\) and tenant_rls\.verified_tenant do not exist/,
    fix: /signedContextSql/
  },
  {
    name: 'the app role without EXECUTE on the function',
    change: `REVOKE EXECUTE ON FUNCTION tenant_rls.current_tenant() FROM ${db.appRole}`,
    undo: `GRANT EXECUTE ON FUNCTION tenant_rls.current_tenant() TO ${db.appRole}`,
    problem: /may not execute tenant_rls\.current_tenant\(\)/,
    fix: /GRANT EXECUTE/
  },
  {
    name: 'the app role without SELECT on the view the function reads',
    change: `REVOKE SELECT ON tenant_rls.verified_tenant FROM ${db.appRole}`,
    undo: `GRANT SELECT ON tenant_rls.verified_tenant TO ${db.appRole}`,
    problem: /may not read tenant_rls\.verified_tenant/,
    fix: /GRANT SELECT ON tenant_rls\.verified_tenant/
  }
]

for (const refusal of refusals) {
  t.test(`refused: ${refusal.name}`, async (t) => {
    const inspection = await inspectedWith(t, refusal.change, refusal.undo)
    const found = inspection.problems.find(({ problem }) => refusal.problem.test(problem))
    t.ok(found, `the problem is named (got: ${problemsOf(inspection).join(' | ')})`)
    t.match(found?.fix, refusal.fix, 'with its fix')
    await t.rejects(checkSignedContext(pool, context, SETTING, () => {}), { code: 'FST_TENANT_RLS_UNSAFE_ROLE', message: refusal.problem }, 'the startup check refuses')
  })
}

t.test('refused: a signing key the database does not have; warned: a retiring key it no longer has', async (t) => {
  const fresh = newKey('k2')
  const rotating = validateSignedContext({ keys: [fresh, world.key] })
  const before = await inspectSignedContext(pool, rotating, SETTING)
  t.match(problemsOf(before), [/does not accept signatures made with the signing key "k2"/])
  t.match(before.problems[0]?.fix, /installSigningKey/)

  await installSigningKey(world.ownerPool, fresh)
  t.same(await inspectSignedContext(pool, rotating, SETTING), { problems: [], warnings: [] }, 'mid-rotation: both keys installed')
  await removeSigningKey(world.ownerPool, 'k1')
  t.teardown(async () => {
    await installSigningKey(world.ownerPool, world.key)
    await removeSigningKey(world.ownerPool, 'k2')
  })
  const after = await inspectSignedContext(pool, rotating, SETTING)
  t.same(after.problems, [], 'the old key removed: the signing key still verifies')
  t.match(after.warnings, [{ problem: /no longer accepts the key "k1"/, fix: /remove "k1" from signedContext\.keys/ }])
  const warnings: unknown[] = []
  await checkSignedContext(pool, rotating, SETTING, (warning) => warnings.push(warning))
  t.same(warnings, after.warnings, 'the startup check hands the warning on')
})

t.test('refused: a clock further from the database\'s than half the ttl', async (t) => {
  const realNow = Date.now
  // This process's clock runs 20 s behind; the database's is the one that counts.
  Date.now = () => realNow() - 20_000
  try {
    const inspection = await inspectSignedContext(pool, context, SETTING)
    t.match(problemsOf(inspection), [/clock is (19|20)\d{3} ms behind the database's, more than half the signature ttl \(10000 ms\)/, /does not accept signatures made with the signing key "k1"/])
  } finally {
    Date.now = realNow
  }
  t.same(await inspectSignedContext(pool, validateSignedContext({ keys: [world.key], ttl: 60_000 }), SETTING), { problems: [], warnings: [] }, 'the real clock passes')
})

t.test('refused: a pooler between the plugin and PostgreSQL (PgBouncer, transaction mode)', async (t) => {
  const target = await pgBouncerTarget(t, db, 1)
  if (target === undefined) return
  const bounced = target.pool(t, { max: 1 })
  const inspection = await inspectSignedContext(bounced, context, SETTING)
  t.match(problemsOf(inspection), [/reports (no valid backend pid|backend pid -?\d+) but runs on backend \d+: a pooler/])
  t.match(inspection.problems[0]?.fix, /directly/)
})

t.test('a connection that dies during the probe: the server\'s error, the connection destroyed, the process alive', async (t) => {
  await installDeath(db, [db.appRole])
  const dying = db.appPool({ max: 1 })
  const released = releases(dying)
  await db.admin.query(`CREATE OR REPLACE FUNCTION tenant_rls.current_tenant() RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN PERFORM ${DIE}; RETURN NULL; END $$`)
  t.teardown(async () => { await db.admin.query(made?.fn ?? '') })
  await t.rejects(inspectSignedContext(dying, context, SETTING), { code: '57P01' })
  t.same(released, ['destroyed'])
  await db.assertNoLeaks(t, dying)
})
