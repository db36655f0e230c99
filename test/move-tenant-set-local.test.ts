// moveTenant with openWith: 'set-local' (Citus): every job of the move (export, checksums on both
// sides, import, erasure) sets the tenant with SET LOCAL, and the move finishes as with set_config,
// on two plain PostgreSQL servers.
import t from 'tap'
import { moveTenant } from 'fastify-tenant-rls'
import { committedRows } from './helpers/lifecycle-world.js'
import { moveWorld } from './helpers/move-world.js'
import { recordParses } from './helpers/wire-traffic.js'
import type { RecordedParse } from './helpers/wire-traffic.js'

const world = await moveWorld(t)
const { shared, whale, source, target } = world

// The SET LOCAL texts of the tenant each pool's connections sent.
function setLocalTexts (parses: RecordedParse[]): string[] {
  return parses.map((parse) => parse.text).filter((text) => text.startsWith('SET LOCAL "app"'))
}

t.test('a move with openWith: set-local sets the tenant with SET LOCAL on both sides and moves every row', async (t) => {
  // Fresh pools, watched from their first connection.
  const sourcePool = shared.appPool()
  const targetPool = whale.appPool()
  const sourceParses = recordParses(sourcePool)
  const targetParses = recordParses(targetPool)
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
  const onSource = setLocalTexts(sourceParses)
  const onTarget = setLocalTexts(targetParses)
  t.ok(onSource.length >= 2 && onSource.every((text) => text === set), 'the export and the source checksums set the tenant with SET LOCAL')
  t.ok(onTarget.length >= 2 && onTarget.every((text) => text === set), 'the import and the target checksums too')
  await sourcePool.end()
  await targetPool.end()
})
