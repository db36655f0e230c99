// GET /metrics of the example, after real requests on a real database: per-tenant request and
// transaction counts and pool wait, from the plugin's diagnostics_channel events, with the tenant
// label capped (here at one tenant: the second one counts as tenant="other").
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { createTestDatabase } from '../../test/helpers/database.js'
import { newKey } from '../../test/helpers/signed-context.js'
import { buildApp } from '../src/app.js'
import { DEMO, seedDemoData, setUpDatabase } from '../src/database.js'

const JWT_SECRET = 'example-app-test-secret-long-enough-for-hs256'

const db = await createTestDatabase(t)
const pool = db.appPool()
const signedContext = { keys: [newKey('example-test')] }
await setUpDatabase(db.admin, { ownerRole: db.ownerRole, appRole: db.appRole }, signedContext)
await seedDemoData(db.admin, db.ownerRole, pool, signedContext)

const app = await buildApp({ pool, jwtSecret: JWT_SECRET, signedContext, metrics: { maxTenantLabels: 1 } })
t.teardown(() => app.close())
const ACME = DEMO.acme.id
const GLOBEX = DEMO.globex.id

function call (tenantId: string | undefined, url: string) {
  return app.inject({ url, headers: tenantId === undefined ? {} : { authorization: `Bearer ${app.jwt.sign({ tenant_id: tenantId })}` } })
}

/** The value of one series of the exposition, or undefined when it is absent. */
function sample (body: string, series: string): number | undefined {
  const line = body.split('\n').find((candidate) => candidate.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

t.test('/metrics counts requests, transactions and pool wait per tenant, with a bounded tenant label', async (t) => {
  for (let i = 0; i < 3; i++) t.equal((await call(ACME, '/projects')).statusCode, 200)
  t.equal((await call(ACME, `/projects/${randomUUID()}`)).statusCode, 404)
  for (let i = 0; i < 2; i++) t.equal((await call(GLOBEX, '/projects')).statusCode, 200)
  t.equal((await call(undefined, '/projects')).statusCode, 401)

  const response = await app.inject({ url: '/metrics' })
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  const body = response.body
  t.equal(sample(body, `tenant_rls_requests_total{tenant="${ACME}",status_class="2xx"}`), 3)
  t.equal(sample(body, `tenant_rls_requests_total{tenant="${ACME}",status_class="4xx"}`), 1)
  t.equal(sample(body, 'tenant_rls_requests_total{tenant="other",status_class="2xx"}'), 2, 'the second tenant counts as other')
  t.equal(sample(body, 'tenant_rls_requests_total{tenant="none",status_class="4xx"}'), 1, 'no token: no tenant')
  t.equal(sample(body, `tenant_rls_transactions_total{tenant="${ACME}",outcome="committed"}`), 3)
  t.equal(sample(body, `tenant_rls_transactions_total{tenant="${ACME}",outcome="rolled back"}`), 1)
  t.equal(sample(body, 'tenant_rls_transactions_total{tenant="other",outcome="committed"}'), 2)
  t.equal(sample(body, 'tenant_rls_rollbacks_total{reason="error"}'), 1, 'the 404 threw')
  t.equal(sample(body, 'tenant_rls_pool_wait_seconds_count{acquired="true"}'), 6)
  t.ok((sample(body, `tenant_rls_pool_wait_seconds_total{tenant="${ACME}"}`) ?? -1) >= 0, 'pool wait per tenant')
  t.equal(sample(body, 'tenant_rls_transaction_hold_seconds_count{outcome="committed"}'), 5)
  t.equal(sample(body, 'tenant_rls_query_duration_seconds_count{command="SELECT"}'), 6)
  t.notOk(body.includes(GLOBEX), 'a tenant beyond the cap never becomes a label')
  await db.assertNoLeaks(t, pool)
})
