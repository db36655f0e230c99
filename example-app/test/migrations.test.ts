// The checked-in migrations are what the schema says: drizzle-kit would generate nothing new from
// schema.ts, and the custom migration holds exactly what tenantTablesSql writes for it. A table
// added to the schema without regenerating both fails here, not in production.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateDrizzleJson, generateMigration } from 'drizzle-kit/api'
import type { DrizzleSnapshotJSON } from 'drizzle-kit/api'
import t from 'tap'
import { tenantTablesSql } from 'fastify-tenant-rls/schema'
import { GRANTEE_ROLE, MIGRATIONS_FOLDER } from '../src/database.js'
import * as schema from '../src/schema.js'

interface Journal { entries: Array<{ idx: number, tag: string }> }

const journal = JSON.parse(await readFile(join(MIGRATIONS_FOLDER, 'meta', '_journal.json'), 'utf8')) as Journal
const last = journal.entries.at(-1)
const lastGenerated = journal.entries.filter(({ tag }) => !tag.includes('force-rls')).at(-1)

t.test('drizzle-kit has nothing left to generate', async (t) => {
  t.ok(lastGenerated, 'a generated migration is checked in')
  const snapshotFile = `${String(lastGenerated?.idx).padStart(4, '0')}_snapshot.json`
  const snapshot = JSON.parse(await readFile(join(MIGRATIONS_FOLDER, 'meta', snapshotFile), 'utf8')) as DrizzleSnapshotJSON
  t.same(await generateMigration(snapshot, generateDrizzleJson(schema)), [], 'run `npx drizzle-kit generate --config example-app/drizzle.config.ts` after changing schema.ts')
})

t.test('the last migration forces RLS and grants on every tenant table', async (t) => {
  t.match(last?.tag, /force-rls/, 'the FORCE and grants migration comes after the generated ones')
  const custom = await readFile(join(MIGRATIONS_FOLDER, `${last?.tag}.sql`), 'utf8')
  t.equal(custom, tenantTablesSql(schema, { role: GRANTEE_ROLE }), 'regenerate it with tenantTablesSql (see the README) after adding a tenant table')
})
