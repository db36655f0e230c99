// Moving a tenant between two databases in signed mode (policies that verify a signed tenant
// context): with the plugin's signedContext every row moves; without it the application role sees
// none of the signed rows, and the move must refuse before the flip rather than erase rows nobody
// copied. Run again with signedContext, the same move exports again and finishes.
import t from 'tap'
import { moveTenant } from 'fastify-tenant-rls'
import type { MoveTenantOptions } from 'fastify-tenant-rls'
import { installSigningKey, removeSigningKey, tenantStatusSql } from 'fastify-tenant-rls/schema'
import { placementTableSql } from 'fastify-tenant-rls/schema'
import { createSignedWorld, NOTES_PER_TENANT } from './helpers/signed-context.js'
import type { SignedWorld } from './helpers/signed-context.js'

const first = await createSignedWorld(t)
const second = await createSignedWorld(t)
// One key on both databases, as one application signing for both would need.
await removeSigningKey(second.ownerPool, second.key.id)
await installSigningKey(second.ownerPool, first.key)
// Signed mode refuses a database whose app role still uses a table with the plain policy (the
// signed world's control table), as the plugin's startup check does: the move covers signed_notes.
for (const world of [first, second]) await world.db.asOwner('DROP TABLE plain_notes')
for (const world of [first, second]) await world.db.asOwner(tenantStatusSql({ appRole: world.db.appRole, table: 'public.tenants', signedContext: true }))
await first.db.asOwner(placementTableSql({ readerRole: first.db.appRole }))
await first.db.admin.query("INSERT INTO tenant_placements (tenant, database) VALUES ($1, 'first')", [first.a])

const side = (world: SignedWorld, name: string): MoveTenantOptions['source'] => ({ name, appPool: world.db.appPool(), adminPool: world.db.admin })
const options: MoveTenantOptions = {
  tenantId: first.a,
  source: side(first, 'first'),
  target: side(second, 'second'),
  placement: { pool: first.db.admin },
  directory: t.testdir(),
  drainMs: 0
}

async function notes (world: SignedWorld): Promise<number[]> {
  const counts = []
  for (const table of ['signed_notes']) {
    const { rows: [row] } = await world.db.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE tenant_id = $1`, [first.a])
    counts.push(row?.n ?? -1)
  }
  return counts
}

t.test('without signedContext the move refuses before the flip; with it, every row moves', async (t) => {
  await t.rejects(moveTenant(options), { code: 'FST_TENANT_RLS_MOVE_REFUSED', message: /holds 100 row\(s\) of signed_notes for the tenant, the export only 0.*signedContext/ })
  t.same(await notes(first), [NOTES_PER_TENANT], 'nothing erased on the source')
  const { rows: [placed] } = await first.db.admin.query('SELECT database, move_step FROM tenant_placements WHERE tenant = $1', [first.a])
  t.same(placed, { database: 'first', move_step: 'marked' }, 'not flipped; rewound to export again')

  const report = await moveTenant({ ...options, signedContext: { keys: [first.key] } })
  t.same(report.tables.map(({ rows }) => rows), [NOTES_PER_TENANT])
  t.same(await notes(second), [NOTES_PER_TENANT], 'every row on the target')
  t.same(await notes(first), [0], 'none left on the source')
})
