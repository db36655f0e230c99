// The SQL-level cost of the signed tenant context: the same W1 query (a tenant's 20 newest items)
// over two copies of the same rows, one table with the plain policy (current_setting) and one with
// the signed policy (tenant_rls.current_tenant(), which verifies an HMAC-SHA256), read in the same
// transactions, interleaved. Measured four ways: PostgreSQL's own planning and execution times
// (EXPLAIN ANALYZE) unprepared and prepared (PREPARE / EXECUTE), the round trip seen by pg
// unprepared and as a named statement, and the cost of one evaluation of each tenant expression.
// Its own throw-away PostgreSQL (or DATABASE_URL): it never touches the main benchmark's data.
// Run: npm run build && node --import tsx bench/signed-context-sql.ts [samples]
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import pg from 'pg'
import { currentTenantSql, installSigningKey, signedContextSql, signedCurrentTenantSql } from 'fastify-tenant-rls/schema'
import { backendPidOf } from '../src/signed-context/backend-pid.js'
import { validateSignedContext } from '../src/signed-context/options.js'
import { signTenantContext } from '../src/signed-context/signer.js'
import { startPostgres } from '../test/helpers/postgres-server.js'
import { PASSWORD, withDatabase } from './seed.js'
import { median } from './summary.js'

const SAMPLES = Number(process.argv[2] ?? 400)
const TENANTS = 200
const ROWS_PER_TENANT = 500
const DATABASE = 'tenant_rls_signed_bench'
const APP = 'signed_bench_app'
const OWNER = 'signed_bench_owner'
const SETTING = 'app.current_tenant_id'
const QUERY = (table: string): string => `SELECT id, created_at, title, amount FROM ${table} ORDER BY created_at DESC LIMIT 20`
const FORMS = { plain: 'plain_items', signed: 'signed_items' } as const
type Form = keyof typeof FORMS

async function seed (serverUrl: string): Promise<{ appUrl: string, tenants: string[], key: ReturnType<typeof validateSignedContext> }> {
  const root = new pg.Client({ connectionString: serverUrl })
  await root.connect()
  await root.query(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
  for (const role of [APP, OWNER]) await root.query(`DROP ROLE IF EXISTS ${role}`)
  await root.query(`CREATE DATABASE ${DATABASE}`)
  await root.query(`CREATE ROLE ${OWNER} NOLOGIN; CREATE ROLE ${APP} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${PASSWORD}'`)
  await root.end()

  const admin = new pg.Client({ connectionString: withDatabase(serverUrl, DATABASE) })
  await admin.connect()
  await admin.query(`GRANT CONNECT ON DATABASE ${DATABASE} TO ${APP}; GRANT USAGE, CREATE ON SCHEMA public TO ${OWNER}; GRANT USAGE ON SCHEMA public TO ${APP}`)
  await admin.query(signedContextSql({ role: APP, owner: OWNER, setting: SETTING }))
  const policies = { plain: `(select ${currentTenantSql(SETTING)})`, signed: `(select ${signedCurrentTenantSql()})` }
  await admin.query('SET ROLE ' + OWNER)
  await admin.query(`CREATE TABLE tenants (id uuid PRIMARY KEY);
    INSERT INTO tenants SELECT md5('tenant-' || n)::uuid FROM generate_series(1, ${TENANTS}) AS n`)
  for (const [form, table] of Object.entries(FORMS) as Array<[Form, string]>) {
    await admin.query(`
      CREATE TABLE ${table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL, created_at timestamptz NOT NULL, title text NOT NULL, amount integer NOT NULL);
      INSERT INTO ${table} (tenant_id, created_at, title, amount)
        SELECT md5('tenant-' || (1 + g % ${TENANTS}))::uuid, now() - g * interval '1 second', 'item ' || g, g % 997 FROM generate_series(1, ${TENANTS * ROWS_PER_TENANT}) AS g;
      CREATE INDEX ${table}_tenant_created_idx ON ${table} (tenant_id, created_at DESC);
      ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY;
      ALTER TABLE ${table} FORCE ROW LEVEL SECURITY;
      CREATE POLICY tenant_isolation ON ${table} USING (tenant_id = ${policies[form]}) WITH CHECK (tenant_id = ${policies[form]});
      GRANT SELECT ON ${table} TO ${APP};`)
  }
  const context = validateSignedContext({ keys: [{ id: 'bench', secret: randomBytes(48) }] })
  await installSigningKey(admin, { id: 'bench', secret: context.signingKey.secret.export() })
  await admin.query('RESET ROLE')
  for (const table of Object.values(FORMS)) await admin.query(`VACUUM ANALYZE ${table}`)
  const { rows } = await admin.query<{ id: string }>('SELECT id FROM tenants ORDER BY id')
  await admin.end()
  return { appUrl: withDatabase(serverUrl, DATABASE, APP), tenants: rows.map((row) => row.id), key: context }
}

interface Explained { 'Planning Time': number, 'Execution Time': number, Plan: { 'Node Type': string, Plans?: Array<{ 'Node Type': string, 'Index Name'?: string }> } }

async function explained (client: pg.Client, statement: string): Promise<Explained> {
  const { rows } = await client.query(`EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ${statement}`)
  const plan = (rows[0]?.['QUERY PLAN'] as Explained[] | undefined)?.[0]
  if (plan === undefined) throw new Error('no plan')
  return plan
}

async function timed (work: () => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint()
  await work()
  return Number(process.hrtime.bigint() - started) / 1e6
}

type Series = Record<Form, number[]>
const series = (): Series => ({ plain: [], signed: [] })

async function main (): Promise<void> {
  const server = await startPostgres()
  try {
    const { appUrl, tenants, key } = await seed(server.adminUrl)
    const client = new pg.Client({ connectionString: appUrl })
    await client.connect()
    const pid = backendPidOf(client)
    if (pid === undefined) throw new Error('no backend pid')
    for (const [form, table] of Object.entries(FORMS)) await client.query(`PREPARE w1_${form} AS ${QUERY(table)}`)

    const figures = { planning: series(), execution: series(), preparedPlanning: series(), preparedExecution: series(), roundTrip: series(), namedRoundTrip: series() }
    const plans: Record<string, string> = {}
    for (let i = 0; i < SAMPLES + 10; i++) {
      const tenant = tenants[Math.floor(Math.random() * tenants.length)] as string
      const signature = signTenantContext({ key: key.signingKey, tenantId: tenant, backendPid: pid, expiresAt: Date.now() + key.ttl })
      await client.query('BEGIN')
      await client.query('SELECT set_config($1, $2, true), set_config($3, $4, true)', [SETTING, tenant, signature.name, signature.value])
      // Alternate which form goes first, so neither always runs on pages the other warmed.
      const order: Form[] = i % 2 === 0 ? ['plain', 'signed'] : ['signed', 'plain']
      for (const form of order) {
        const unprepared = await explained(client, QUERY(FORMS[form]))
        const prepared = await explained(client, `EXECUTE w1_${form}`)
        const roundTrip = await timed(() => client.query(QUERY(FORMS[form])))
        const named = await timed(() => client.query({ name: `w1_named_${form}`, text: QUERY(FORMS[form]) }))
        // The first ten rounds warm caches and let the prepared statements settle on their plans.
        if (i < 10) continue
        figures.planning[form].push(unprepared['Planning Time'])
        figures.execution[form].push(unprepared['Execution Time'])
        figures.preparedPlanning[form].push(prepared['Planning Time'])
        figures.preparedExecution[form].push(prepared['Execution Time'])
        figures.roundTrip[form].push(roundTrip)
        figures.namedRoundTrip[form].push(named)
        plans[form] = JSON.stringify(unprepared.Plan.Plans?.map((node) => node['Index Name'] ?? node['Node Type']))
      }
      await client.query('ROLLBACK')
    }

    // One evaluation of each tenant expression, per row of a series (no InitPlan: called each row).
    await client.query('BEGIN')
    const tenant = tenants[0] as string
    const signature = signTenantContext({ key: key.signingKey, tenantId: tenant, backendPid: pid, expiresAt: Date.now() + key.ttl })
    await client.query('SELECT set_config($1, $2, true), set_config($3, $4, true)', [SETTING, tenant, signature.name, signature.value])
    const CALLS = 20_000
    const perCall: Series = series()
    for (let i = 0; i < 20; i++) {
      perCall.plain.push((await explained(client, `SELECT count(${currentTenantSql(SETTING)}) FROM generate_series(1, ${CALLS})`))['Execution Time'] * 1000 / CALLS)
      perCall.signed.push((await explained(client, `SELECT count(${signedCurrentTenantSql()}) FROM generate_series(1, ${CALLS})`))['Execution Time'] * 1000 / CALLS)
    }
    await client.query('ROLLBACK')
    await client.end()

    const summary = Object.fromEntries(Object.entries(figures).map(([name, values]) => [name, {
      plainMs: round(median(values.plain)),
      signedMs: round(median(values.signed)),
      differenceMs: round(median(values.signed) - median(values.plain)),
      ratio: round(median(values.signed) / median(values.plain))
    }]))
    const totals = (planning: Series, execution: Series, form: Form): number => median(planning[form].map((value, index) => value + (execution[form][index] ?? 0)))
    const result = {
      date: new Date().toISOString(),
      server: process.env.DATABASE_URL === undefined || process.env.DATABASE_URL === '' ? 'embedded' : 'DATABASE_URL',
      samples: SAMPLES,
      rows: TENANTS * ROWS_PER_TENANT,
      query: QUERY('<table>'),
      plans,
      medians: summary,
      planningPlusExecution: {
        unprepared: { plainMs: round(totals(figures.planning, figures.execution, 'plain')), signedMs: round(totals(figures.planning, figures.execution, 'signed')) },
        prepared: { plainMs: round(totals(figures.preparedPlanning, figures.preparedExecution, 'plain')), signedMs: round(totals(figures.preparedPlanning, figures.preparedExecution, 'signed')) }
      },
      perEvaluationMicroseconds: { plain: round(median(perCall.plain)), signed: round(median(perCall.signed)) }
    }
    const base = new URL('results/signed-context-sql', import.meta.url).pathname
    await writeFile(`${base}.json`, JSON.stringify(result, null, 2) + '\n')
    await writeFile(`${base}.md`, report(result))
    process.stdout.write(report(result))
  } finally {
    await server.stop()
  }
}

function round (value: number): number {
  return Math.round(value * 10000) / 10000
}

function report (result: { date: string, server: string, samples: number, rows: number, query: string, plans: Record<string, string>, medians: Record<string, { plainMs: number, signedMs: number, differenceMs: number, ratio: number }>, planningPlusExecution: Record<string, { plainMs: number, signedMs: number }>, perEvaluationMicroseconds: { plain: number, signed: number } }): string {
  const rows = Object.entries(result.medians).map(([name, m]) => `| ${name} | ${m.plainMs} | ${m.signedMs} | ${m.differenceMs} | ${m.ratio} |`)
  const totals = Object.entries(result.planningPlusExecution).map(([name, m]) => `| ${name} | ${m.plainMs} | ${m.signedMs} | ${round(m.signedMs / m.plainMs)} |`)
  return `# Signed tenant context: SQL-level cost

${result.date}, ${result.server} PostgreSQL, ${result.rows} rows, ${result.samples} interleaved samples per form.
Query: \`${result.query}\`; plans: plain ${result.plans.plain}, signed ${result.plans.signed}.

| median (ms) | plain | signed | signed - plain | signed / plain |
|---|---|---|---|---|
${rows.join('\n')}

| planning + execution (ms) | plain | signed | signed / plain |
|---|---|---|---|
${totals.join('\n')}

One evaluation of the tenant expression: plain ${result.perEvaluationMicroseconds.plain} µs, signed ${result.perEvaluationMicroseconds.signed} µs.
`
}

await main()
