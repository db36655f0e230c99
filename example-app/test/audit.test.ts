// The example app's database, built by its own startup steps (grants, then the checked-in drizzle
// migrations), passes the audit clean; a broken copy (the same database with breakages applied in
// a transaction the audit reads through, then rolled back) fails with exactly the rule ids of
// what was broken.
import t from 'tap'
import { auditDatabase } from 'fastify-tenant-rls/audit'
import { createTestDatabase } from '../../test/helpers/database.js'
import { newKey } from '../../test/helpers/signed-context.js'
import { ruleIds } from '../../test/helpers/audit-world.js'
import { GRANTEE_ROLE, setUpDatabase } from '../src/database.js'

const db = await createTestDatabase(t)
await setUpDatabase(db.admin, { ownerRole: db.ownerRole, appRole: db.appRole }, { keys: [newKey('example-test')] })

t.test('the example app\'s schema passes clean', async (t) => {
  const report = await auditDatabase(db.admin, { appRole: db.appRole, signedContext: true })
  t.same(report.findings, [])
  t.same(report.tables, ['projects', 'tasks'])
  t.ok(report.ok)
})

t.test('a broken copy fails with the rule ids of what was broken', async (t) => {
  const client = await db.admin.connect()
  try {
    await client.query('BEGIN')
    await client.query(`
      ALTER TABLE projects NO FORCE ROW LEVEL SECURITY;
      CREATE POLICY everyone ON tasks FOR SELECT USING (true);
      GRANT SELECT ON tenants TO ${GRANTEE_ROLE};
      ALTER TABLE projects ADD CONSTRAINT projects_id_key UNIQUE (id);
      ALTER TABLE tasks DROP CONSTRAINT tasks_project_id_fk, ADD CONSTRAINT tasks_project_id_fk FOREIGN KEY (project_id) REFERENCES projects (id);
      CREATE VIEW open_tasks AS SELECT * FROM tasks WHERE NOT done;
      GRANT SELECT ON open_tasks TO ${GRANTEE_ROLE};
      GRANT TEMPORARY ON DATABASE ${new URL(db.adminUrl).pathname.slice(1)} TO ${db.appRole};
    `)
    const report = await auditDatabase(client, { appRole: db.appRole, signedContext: true })
    t.same(ruleIds(report), [
      'bypass.view',
      'default-deny.unregistered-global',
      'keys.fk-without-tenant',
      'keys.unique-without-tenant',
      'role.temp',
      'tables.permissive-without-setting',
      'tables.rls-not-forced'
    ], report.findings.map((entry) => `${entry.rule} ${entry.object}`).join('\n'))
    t.notOk(report.ok)
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
  t.same((await auditDatabase(db.admin, { appRole: db.appRole, signedContext: true })).findings, [], 'rolled back: clean again')
})
