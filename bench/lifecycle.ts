// On demand, not part of `npm run bench`: exports one tenant of 1,000,000 rows (250,000 projects,
// 750,000 tasks, beside a second tenant) with exportTenant and imports it into a second database
// with importTenant, through the application role, and records the time and the peak resident
// memory of each phase: the figure that shows memory stays bounded whatever the tenant's size.
//
//   npm run build && node --import tsx bench/lifecycle.ts
//
// A fresh embedded PostgreSQL in a temporary folder (default settings, fsync on), or DATABASE_URL.
// Results: bench/results/lifecycle.json and bench/results/lifecycle.md.
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { exportTenant, importTenant, tenantChecksums } from 'fastify-tenant-rls'
import { sharedRoleHardeningSql, sharedRoleSuperuserHardeningSql } from 'fastify-tenant-rls/schema'
import { startPostgres } from '../test/helpers/postgres-server.js'

const PROJECTS = 250_000
const TASKS_PER_PROJECT = 3
const TENANT = '0f4c6a1e-3d1b-4c57-9a53-6f0c1f0a0001'
const OTHER = '0f4c6a1e-3d1b-4c57-9a53-6f0c1f0a0002'
const APP_ROLE = 'lifecycle_app'
const OWNER_ROLE = 'lifecycle_owner'
const APP_PASSWORD = 'lifecycle'
const POLICY = "tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)"

const SCHEMA = `
  CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL);
  CREATE TABLE projects (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL, budget numeric(12, 2), created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id));
  CREATE TABLE tasks (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, id uuid NOT NULL DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL, title text NOT NULL, done boolean NOT NULL DEFAULT false, PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE);
  ${['projects', 'tasks'].map((table) => `
    ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY; ALTER TABLE ${table} FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON ${table} USING (${POLICY}) WITH CHECK (${POLICY});
    GRANT SELECT, INSERT, UPDATE, DELETE ON ${table} TO ${APP_ROLE};`).join('')}`

/** Creates a database with the tables (owned by the owner role) and both tenants' rows. */
async function createDatabase (adminUrl: string, name: string): Promise<{ admin: pg.Pool, appUrl: string }> {
  const root = new pg.Client({ connectionString: adminUrl })
  await root.connect()
  await root.query(`CREATE DATABASE ${name}`)
  await root.end()
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  const admin = new pg.Pool({ connectionString: url.toString(), max: 2 })
  await admin.query(sharedRoleHardeningSql({ role: APP_ROLE, database: name }))
  await admin.query(sharedRoleSuperuserHardeningSql())
  await admin.query(`GRANT CONNECT ON DATABASE ${name} TO ${APP_ROLE}; GRANT USAGE, CREATE ON SCHEMA public TO ${OWNER_ROLE}; GRANT USAGE ON SCHEMA public TO ${APP_ROLE}`)
  await admin.query(`SET ROLE ${OWNER_ROLE}; ${SCHEMA}; RESET ROLE`)
  await admin.query("INSERT INTO tenants VALUES ($1, 'whale'), ($2, 'other')", [TENANT, OTHER])
  url.username = APP_ROLE
  url.password = APP_PASSWORD
  return { admin, appUrl: url.toString() }
}

/** The peak resident set size while `work` runs, sampled every 10 ms. */
async function measured<T> (work: () => Promise<T>): Promise<{ result: T, seconds: number, peakRssMb: number, startRssMb: number }> {
  const startRss = process.memoryUsage.rss()
  let peak = startRss
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage.rss()) }, 10)
  const started = process.hrtime.bigint()
  try {
    const result = await work()
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    peak = Math.max(peak, process.memoryUsage.rss())
    return { result, seconds, peakRssMb: peak / 2 ** 20, startRssMb: startRss / 2 ** 20 }
  } finally {
    clearInterval(sampler)
  }
}

const server = await startPostgres()
const folder = await mkdtemp(join(tmpdir(), 'lifecycle-bench-'))
try {
  const root = new pg.Client({ connectionString: server.adminUrl })
  await root.connect()
  await root.query(`CREATE ROLE ${OWNER_ROLE} NOLOGIN; CREATE ROLE ${APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${APP_PASSWORD}'`)
  await root.end()
  const source = await createDatabase(server.adminUrl, 'lifecycle_source')
  const target = await createDatabase(server.adminUrl, 'lifecycle_target')

  console.error(`seeding ${PROJECTS * (1 + TASKS_PER_PROJECT)} rows for one tenant…`)
  for (const [tenant, projects] of [[TENANT, PROJECTS], [OTHER, 10_000]] as const) {
    await source.admin.query('INSERT INTO projects (tenant_id, name, budget) SELECT $1, \'project \' || i, i / 100.0 FROM generate_series(1, $2::int) i', [tenant, projects])
    await source.admin.query(`INSERT INTO tasks (tenant_id, project_id, title) SELECT tenant_id, id, 'task ' || n || ' of ' || name FROM projects, generate_series(1, ${TASKS_PER_PROJECT}) n WHERE tenant_id = $1`, [tenant])
  }
  await source.admin.query('VACUUM ANALYZE')

  const sourcePool = new pg.Pool({ connectionString: source.appUrl, max: 1, connectionTimeoutMillis: 10_000 })
  const targetPool = new pg.Pool({ connectionString: target.appUrl, max: 1, connectionTimeoutMillis: 10_000 })
  const file = join(folder, 'whale.export')
  console.error('exporting…')
  const exported = await measured(() => exportTenant({ pool: sourcePool, tenantId: TENANT, out: file }))
  console.error('importing…')
  const imported = await measured(() => importTenant({ pool: targetPool, from: file }))
  const checked = await tenantChecksums({ pool: targetPool, tenantId: TENANT })
  const same = JSON.stringify(checked.tables) === JSON.stringify(exported.result.tables)
  if (!same) throw new Error('the imported tenant does not match its export')
  const { rows: [version] } = await source.admin.query<{ v: string }>("SELECT current_setting('server_version') AS v")
  const rows = exported.result.tables.reduce((sum, table) => sum + table.rows, 0)
  const figures = {
    date: new Date().toISOString(),
    node: process.version,
    postgres: version?.v,
    server: process.env.DATABASE_URL === undefined ? 'embedded, default settings' : 'DATABASE_URL',
    rows,
    tables: exported.result.tables.map(({ name, rows }) => ({ name, rows })),
    fileMb: (await stat(file)).size / 2 ** 20,
    export: { seconds: exported.seconds, rowsPerSecond: rows / exported.seconds, startRssMb: exported.startRssMb, peakRssMb: exported.peakRssMb },
    import: { seconds: imported.seconds, rowsPerSecond: rows / imported.seconds, startRssMb: imported.startRssMb, peakRssMb: imported.peakRssMb },
    checksumsMatch: same
  }
  const results = new URL('results/', import.meta.url)
  await writeFile(new URL('lifecycle.json', results), `${JSON.stringify(figures, null, 2)}\n`)
  const mb = (value: number): string => `${value.toFixed(0)} MB`
  await writeFile(new URL('lifecycle.md', results), [
    `# Export and import of one tenant of ${rows.toLocaleString('en-US')} rows`,
    '',
    `${figures.date}, Node ${figures.node}, PostgreSQL ${figures.postgres} (${figures.server}); export file ${mb(figures.fileMb)}.`,
    '',
    '| phase | time | rows/s | RSS before | peak RSS |',
    '| --- | --- | --- | --- | --- |',
    ...(['export', 'import'] as const).map((phase) => {
      const figure = figures[phase]
      return `| ${phase} | ${figure.seconds.toFixed(1)} s | ${Math.round(figure.rowsPerSecond).toLocaleString('en-US')} | ${mb(figure.startRssMb)} | ${mb(figure.peakRssMb)} |`
    }),
    '',
    'The imported tenant\'s checksums matched the export\'s, table by table.',
    ''
  ].join('\n'))
  console.log(JSON.stringify(figures, null, 2))
  await Promise.all([sourcePool.end(), targetPool.end(), source.admin.end(), target.admin.end()])
} finally {
  await rm(folder, { recursive: true, force: true })
  await server.stop()
}
