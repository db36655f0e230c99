// The route cache's two bounds, without a database: at most ROUTE_CACHE_SIZE tenants are kept (the
// least recently used goes first), and none longer than ROUTE_CACHE_MS, so a tenant placed
// elsewhere is found there again. The clock is Date.now, replaced here rather than waited for.
import type { Pool } from 'pg'
import t from 'tap'
import { ROUTE_CACHE_MS, ROUTE_CACHE_SIZE, TenantRouter } from '../src/routing/tenant-router.js'

const pool = { connect () {}, options: { connectionTimeoutMillis: 1000 } } as unknown as Pool

function counting (): { router: TenantRouter, asked: string[] } {
  const asked: string[] = []
  const router = new TenantRouter((tenantId) => { asked.push(tenantId); return pool }, async () => 'app')
  return { router, asked }
}

t.test('the least recently used tenant is dropped beyond the size bound', async (t) => {
  const { router, asked } = counting()
  await router.placementOf('first')
  for (let i = 0; i < ROUTE_CACHE_SIZE - 1; i++) await router.placementOf(`t${i}`)
  await router.placementOf('first')
  t.equal(asked.length, ROUTE_CACHE_SIZE, 'first was still cached, and is now the most recent')
  await router.placementOf('one-more')
  await router.placementOf('first')
  t.equal(asked.length, ROUTE_CACHE_SIZE + 1, 'first survived the eviction')
  await router.placementOf('t0')
  t.equal(asked.at(-1), 't0', 't0, the least recently used, was evicted and asked again')
})

t.test('a placement older than the age bound is asked again', async (t) => {
  const realNow = Date.now
  let now = realNow()
  Date.now = () => now
  t.teardown(() => { Date.now = realNow })
  const { router, asked } = counting()
  await router.placementOf('a')
  now += ROUTE_CACHE_MS - 1
  await router.placementOf('a')
  t.same(asked, ['a'])
  now += 1
  await router.placementOf('a')
  t.same(asked, ['a', 'a'])
})

t.test('routeCacheMs sets the age bound: 0 asks on every transaction', async (t) => {
  const realNow = Date.now
  let now = realNow()
  Date.now = () => now
  t.teardown(() => { Date.now = realNow })
  const asked: string[] = []
  const short = new TenantRouter((tenantId) => { asked.push(tenantId); return pool }, async () => 'app', 100)
  await short.placementOf('a')
  now += 99
  await short.placementOf('a')
  t.same(asked, ['a'], 'kept within its 100 ms')
  now += 1
  await short.placementOf('a')
  t.same(asked, ['a', 'a'], 'asked again at 100 ms, not ROUTE_CACHE_MS')
  const none = new TenantRouter((tenantId) => { asked.push(tenantId); return pool }, async () => 'app', 0)
  await none.placementOf('b')
  await none.placementOf('b')
  t.same(asked.filter((id) => id === 'b'), ['b', 'b'])
})
