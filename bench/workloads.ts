// The queries behind W1, W2 and W4, written once and run by the plugin and by the baselines alike.
// The plugin passes no tenant (RLS filters); a baseline passes the tenant, which becomes the
// WHERE tenant_id = … that it would otherwise have to write by hand.
import { and, desc, eq, gte, lt, sql } from 'drizzle-orm'
import type { Placeholder, SQL } from 'drizzle-orm'
import { integer, pgTable, text, timestamp, uuid, bigint } from 'drizzle-orm/pg-core'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { POSTED_TITLE } from './seed.js'

export const items = pgTable('items', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  tenantId: uuid('tenant_id').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
  title: text('title').notNull(),
  amount: integer('amount').notNull()
})

/** What the workloads use of a drizzle database: request.db, drizzle(pool), drizzle(client) and drizzle over postgres.js all fit. */
export type Database = Pick<PgDatabase<PgQueryResultHKT>, 'select' | 'insert'>

/** A tenant to filter on by hand (a value, or a placeholder for a prepared query); none under RLS. */
export type ManualTenant = string | Placeholder | undefined

function ownRows (tenant: ManualTenant): SQL | undefined {
  return tenant === undefined ? undefined : eq(items.tenantId, tenant)
}

/** W1: a tenant's 20 newest rows. */
export function newestItems (db: Database, tenant?: ManualTenant) {
  return db.select({ id: items.id, createdAt: items.createdAt, title: items.title, amount: items.amount })
    .from(items)
    .where(ownRows(tenant))
    .orderBy(desc(items.createdAt))
    .limit(20)
}

/** W2: one new row. `tenantId` is the request's own tenant: under RLS, WITH CHECK verifies it. */
export async function postItem (db: Database, tenantId: string, amount: number): Promise<{ id: number }> {
  const [row] = await db.insert(items).values({ tenantId, title: POSTED_TITLE, amount }).returning({ id: items.id })
  if (row === undefined) throw new Error('the insert returned no row')
  return row
}

/** W4: three queries, each using the previous one's answer. */
export async function threeDependentQueries (db: Database, tenant?: ManualTenant): Promise<{ newest: string, total: number }> {
  const [newest] = await db.select({ createdAt: items.createdAt }).from(items)
    .where(ownRows(tenant)).orderBy(desc(items.createdAt)).limit(1)
  if (newest === undefined) return { newest: '', total: 0 }
  const earlier = await db.select({ createdAt: items.createdAt }).from(items)
    .where(and(ownRows(tenant), lt(items.createdAt, newest.createdAt))).orderBy(desc(items.createdAt)).limit(5)
  const since = earlier.at(-1)?.createdAt ?? newest.createdAt
  const [sum] = await db.select({ total: sql<number>`coalesce(sum(${items.amount}), 0)::int` }).from(items)
    .where(and(ownRows(tenant), gte(items.createdAt, since)))
  return { newest: newest.createdAt, total: sum?.total ?? 0 }
}
