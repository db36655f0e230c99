// The checked-in migrations are what the schema says: drizzle-kit would generate nothing new from
// schema.ts, the custom migrations hold exactly what tenantTablesSql, signedContextSql,
// auditTrailSql and grantsTableSql write for it, and the signed context is created before the
// policies that call it. A table added to the
// schema without regenerating fails here, not in production.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateDrizzleJson, generateMigration } from 'drizzle-kit/api'
import type { DrizzleSnapshotJSON } from 'drizzle-kit/api'
import t from 'tap'
import { auditTrailSql, grantsTableSql } from 'fastify-tenant-rls/elevated'
import { signedContextSql, tenantTablesSql } from 'fastify-tenant-rls/schema'
import { ELEVATED_TABLES, GRANTEE_ROLE, KEYS_OWNER_ROLE, MIGRATIONS_FOLDER, SYSTEM_ROLE } from '../src/database.js'
import * as schema from '../src/schema.js'

interface Journal { entries: Array<{ idx: number, tag: string }> }

const journal = JSON.parse(await readFile(join(MIGRATIONS_FOLDER, 'meta', '_journal.json'), 'utf8')) as Journal
// The custom migrations, by the tag drizzle-kit generate --custom --name gave them (the newest of each kind).
const CUSTOM = /force-rls|signed-context|elevated-schema|audit-trail|support-grants/
const lastGenerated = journal.entries.filter(({ tag }) => !CUSTOM.test(tag)).at(-1)
const tagged = (name: string): { idx: number, tag: string } | undefined => journal.entries.filter(({ tag }) => tag.includes(name)).at(-1)
const readMigration = (tag: string | undefined): Promise<string> => readFile(join(MIGRATIONS_FOLDER, `${tag}.sql`), 'utf8')

t.test('drizzle-kit has nothing left to generate', async (t) => {
  t.ok(lastGenerated, 'a generated migration is checked in')
  const snapshotFile = `${String(lastGenerated?.idx).padStart(4, '0')}_snapshot.json`
  const snapshot = JSON.parse(await readFile(join(MIGRATIONS_FOLDER, 'meta', snapshotFile), 'utf8')) as DrizzleSnapshotJSON
  t.same(await generateMigration(snapshot, generateDrizzleJson(schema)), [], 'run `npx drizzle-kit generate --config example-app/drizzle.config.ts` after changing schema.ts')
})

t.test('the force-rls migration forces RLS and grants on every tenant table', async (t) => {
  const forced = tagged('force-rls')
  t.ok(forced, 'the FORCE and grants migration is checked in')
  t.equal(await readMigration(forced?.tag), tenantTablesSql(schema, { role: GRANTEE_ROLE }), 'regenerate it with tenantTablesSql (see the README) after adding a tenant table')
})

t.test('the signed context migration is signedContextSql, applied before the policies that call it', async (t) => {
  const signed = tagged('signed-context')
  t.equal(await readMigration(signed?.tag), signedContextSql({ role: GRANTEE_ROLE, owner: KEYS_OWNER_ROLE }))
  const callers = journal.entries.filter((entry) => entry !== signed)
  const first = (await Promise.all(callers.map(async (entry) => ((await readMigration(entry.tag)).includes('tenant_rls.current_tenant()') ? entry.idx : Infinity)))).reduce((a, b) => Math.min(a, b), Infinity)
  t.ok(Number.isFinite(first), 'a migration gives the policies the signed form')
  t.ok((signed?.idx ?? Infinity) < first, 'the function exists before any policy calls it')
})

t.test('the audit trail and grants migrations are auditTrailSql and grantsTableSql (signed) for the system role', async (t) => {
  t.equal(await readMigration(tagged('audit-trail')?.tag), auditTrailSql({ systemRole: SYSTEM_ROLE, auditTable: ELEVATED_TABLES.auditTable }))
  t.equal(await readMigration(tagged('support-grants')?.tag), grantsTableSql({ appRole: GRANTEE_ROLE, systemRole: SYSTEM_ROLE, grantsTable: ELEVATED_TABLES.grantsTable, signedContext: true }))
})
