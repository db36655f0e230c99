// The example's system job: the nightly per-tenant usage count (projects, open and done tasks of
// every organization) that billing reads. It is the one piece of the example that reads across
// tenants, so it runs through app.withSystem on the system role's pool, never on the app pool:
// the plugin checks that role first and brackets the job with two audit rows.
import { count, eq, sql } from 'drizzle-orm'
import type { FastifyInstance } from 'fastify'
import * as schema from './schema.js'

/** One organization's usage. */
export interface TenantUsage {
  tenantId: string
  name: string
  projects: number
  openTasks: number
  doneTasks: number
}

/** Who runs the job, as the audit trail records it. */
export const USAGE_JOB = { actor: 'job:usage-count', reason: 'nightly per-tenant usage count for billing' } as const

/**
 * Counts every organization's projects and tasks in one transaction of the system role, by
 * organization name. Organizations without rows are listed with zeros.
 */
export async function countUsage (app: FastifyInstance): Promise<TenantUsage[]> {
  return app.withSystem(USAGE_JOB, async (db) => {
    // Counted per table and joined by tenant: one join of projects to tasks would count each
    // project once per task.
    const projects = db.select({ tenantId: schema.projects.tenantId, total: count().as('projects') })
      .from(schema.projects).groupBy(schema.projects.tenantId).as('p')
    const tasks = db.select({
      tenantId: schema.tasks.tenantId,
      open: sql<number>`count(*) FILTER (WHERE NOT ${schema.tasks.done})::int`.as('open'),
      done: sql<number>`count(*) FILTER (WHERE ${schema.tasks.done})::int`.as('done')
    }).from(schema.tasks).groupBy(schema.tasks.tenantId).as('t')
    return db.select({
      tenantId: schema.tenants.id,
      name: schema.tenants.name,
      projects: sql<number>`coalesce(${projects.total}, 0)::int`,
      openTasks: sql<number>`coalesce(${tasks.open}, 0)::int`,
      doneTasks: sql<number>`coalesce(${tasks.done}, 0)::int`
    }).from(schema.tenants)
      .leftJoin(projects, eq(projects.tenantId, schema.tenants.id))
      .leftJoin(tasks, eq(tasks.tenantId, schema.tenants.id))
      .orderBy(schema.tenants.name)
  })
}
