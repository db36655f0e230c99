// The isolation kit when one of its connections dies mid-transaction (failover, an operator ending
// the backend): the privileged connection while seeding (reported as a seed failure, naming the
// server's error), the application role's while it attacks (the check rejects with the server's
// 57P01, not the failed rollback's error). Either way the dead connection is released as broken and
// never handed out again, and the rows the kit seeded are removed.
import pg from 'pg'
import t from 'tap'
import type { Test } from 'tap'
import { checkTenantIsolation } from 'fastify-tenant-rls/testing'
import { checkoutsWork, installDeath, killInserts, releases } from './helpers/backend-death.js'
import { createTestDatabase } from './helpers/database.js'

const db = await createTestDatabase(t)
await installDeath(db, [])
const CURRENT = "tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
const { rows: [admin] } = await db.admin.query<{ role: string }>('SELECT current_user AS role')
await db.admin.query(`CREATE SCHEMA dying AUTHORIZATION ${db.ownerRole}; GRANT USAGE ON SCHEMA dying TO ${db.appRole}`)
await db.asOwner(`
  CREATE TABLE dying.rows (tenant_id uuid NOT NULL, id serial PRIMARY KEY, label text NOT NULL);
  ALTER TABLE dying.rows ENABLE ROW LEVEL SECURITY; ALTER TABLE dying.rows FORCE ROW LEVEL SECURITY;
  CREATE POLICY p ON dying.rows USING (${CURRENT}) WITH CHECK (${CURRENT});
  GRANT SELECT, INSERT, UPDATE, DELETE ON dying.rows TO ${db.appRole}; GRANT USAGE ON SEQUENCE dying.rows_id_seq TO ${db.appRole};
`)

async function rowsLeft (): Promise<number> {
  const { rows: [left] } = await db.admin.query<{ count: number }>('SELECT count(*)::int AS count FROM dying.rows')
  return left?.count ?? -1
}

/** A pool of the superuser with one connection: the kit's privileged pool. */
function privilegedPool (t: Test): pg.Pool {
  const pool = new pg.Pool({ connectionString: db.adminUrl, max: 1 })
  pool.on('error', () => {})
  t.teardown(() => pool.end())
  return pool
}

t.test('the privileged connection dies while seeding: a seed failure naming the server\'s error; that connection destroyed, nothing left', async (t) => {
  const appPool = db.appPool({ max: 1 })
  const adminPool = privilegedPool(t)
  const released = releases(adminPool)
  await killInserts(t, db, 'dying.rows', String(admin?.role))
  const report = await checkTenantIsolation({ appPool, adminPool, tables: ['dying.rows'] })
  t.same(report.failures.map(({ table, operation }) => [table, operation]), [['dying.rows', 'seed']])
  t.match(report.failures[0]?.message, /could not seed a row per tenant: terminating connection due to administrator command/, "the server's error, not the failed ROLLBACK's")
  t.equal(released.filter((release) => release === 'destroyed').length, 1, 'the dead connection, and only it, was released as broken')
  t.equal(await rowsLeft(), 0)
  await checkoutsWork(adminPool, 1)
  await db.assertNoLeaks(t, appPool)
})

t.test('the application role\'s connection dies mid-attack: the check rejects with 57P01; that connection destroyed, the seeded rows removed', async (t) => {
  const appPool = db.appPool({ max: 2 })
  const released = releases(appPool)
  await killInserts(t, db, 'dying.rows', db.appRole)
  await t.rejects(checkTenantIsolation({ appPool, adminPool: db.admin, tables: ['dying.rows'] }), { code: '57P01', message: /terminating connection due to administrator command/ }, "the statement's error, not the failed rollbacks'")
  t.same(released, ['destroyed'])
  t.equal(await rowsLeft(), 0, 'both tenants\' seeded rows were removed')
  await checkoutsWork(appPool, 2)
  await db.assertNoLeaks(t, appPool)
})

t.test('without the fault the same table passes (the fixture is sound)', async (t) => {
  const appPool = db.appPool({ max: 1 })
  const report = await checkTenantIsolation({ appPool, adminPool: db.admin, tables: ['dying.rows'] })
  t.same(report.failures, [])
  t.equal(await rowsLeft(), 0)
})
