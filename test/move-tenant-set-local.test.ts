// moveTenant with openWith: 'set-local' (Citus): every job of the move (export, checksums on both
// sides, import, erasure) sets the tenant with SET LOCAL, and the move finishes as with set_config,
// on two plain PostgreSQL servers.
import t from 'tap'
import { moveTenant } from 'fastify-tenant-rls'
import type pg from 'pg'
import { committedRows } from './helpers/lifecycle-world.js'
import { moveWorld } from './helpers/move-world.js'

const world = await moveWorld(t)
const { shared, whale, source, target } = world

// The SET LOCAL texts each pool's connections sent (the extended protocol's Parse messages).
function watchSetLocal (pool: pg.Pool): string[] {
  const seen: string[] = []
  pool.on('connect', (client) => {
    const connection = (client as unknown as { connection: { parse (message: { text: string }): void } }).connection
    const parse = connection.parse.bind(connection)
    connection.parse = (message) => {
      if (message.text.startsWith('SET LOCAL "app"')) seen.push(message.text)
      parse(message)
    }
  })
  return seen
}

t.test('a move with openWith: set-local sets the tenant with SET LOCAL on both sides and moves every row', async (t) => {
  // Fresh pools, watched from their first connection.
  const sourcePool = shared.appPool()
  const targetPool = whale.appPool()
  const onSource = watchSetLocal(sourcePool)
  const onTarget = watchSetLocal(targetPool)
  const moving = await world.placeTenant(shared, 20)
  const before = await committedRows(shared, moving)
  await moveTenant({
    tenantId: moving,
    source: { ...source, appPool: sourcePool },
    target: { ...target, appPool: targetPool },
    placement: { pool: shared.admin },
    directory: t.testdir(),
    drainMs: 0,
    openWith: 'set-local'
  })
  t.same(await committedRows(whale, moving), before, 'every row on the target')
  t.same((await committedRows(shared, moving)).projects ?? [], [], 'none left on the source')
  const set = `SET LOCAL "app"."current_tenant_id" TO '${moving}'`
  t.ok(onSource.length >= 2 && onSource.every((text) => text === set), 'the export and the source checksums set the tenant with SET LOCAL')
  t.ok(onTarget.length >= 2 && onTarget.every((text) => text === set), 'the import and the target checksums too')
  await sourcePool.end()
  await targetPool.end()
})
