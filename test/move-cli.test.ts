// `fastify-tenant-rls move`: a move run from the command line between two servers (text and JSON,
// steps on stderr only on a terminal), a missing connection is a usage error (exit 2), a refused
// move exits 3 with the reason, and running the same command again resumes a stopped move.
import t from 'tap'
import { moveTenant } from 'fastify-tenant-rls'
import { runCli } from '../src/cli/run-cli.js'
import { captureIo as capture } from './helpers/cli-io.js'
import { committedRows } from './helpers/lifecycle-world.js'
import { moveWorld } from './helpers/move-world.js'

const world = await moveWorld(t)
const { shared, whale } = world
const { directory } = world

const connections = [
  '--from', 'shared', '--from-url', shared.url(), '--from-admin-url', shared.adminUrl,
  '--to', 'whale', '--to-url', whale.url(), '--to-admin-url', whale.adminUrl,
  '--directory', directory, '--drain-seconds', '0'
]

t.test('a move from the command line', async (t) => {
  const tenantId = await world.placeTenant(shared, 20)
  const before = await committedRows(shared, tenantId)
  const run = capture(true)
  t.equal(await runCli(['move', '--tenant', tenantId, ...connections], run.io), 0, run.err())
  t.match(run.out(), new RegExp(`^Moved tenant ${tenantId} from shared to whale\\n {2}started +\\d+\\.\\d{3} s\\n[^]* {2}erased +\\d+\\.\\d{3} s\\nRows on whale, checksums equal to the source's:\\n {2}projects {2}23 rows {2}sha256 [0-9a-f]{16}…\\n {2}a_tasks {3}46 rows {2}sha256 [0-9a-f]{16}…\\n$`))
  t.equal(run.err(), 'move: started\nmove: marked\nmove: exported\nmove: imported\nmove: verified\nmove: flipped\nmove: drained\nmove: erasing\nmove: erased\n', 'each step on a terminal')
  t.same(await committedRows(whale, tenantId), before)
  t.same(await committedRows(shared, tenantId), { tenants: [], projects: [], a_tasks: [] })
})

t.test('json, and no progress when stderr is not a terminal', async (t) => {
  const tenantId = await world.placeTenant(shared, 1)
  const run = capture()
  t.equal(await runCli(['move', '--tenant', tenantId, ...connections, '--format', 'json'], run.io), 0)
  t.match(JSON.parse(run.out()), { tenantId, source: 'shared', target: 'whale', resumedFrom: null, tables: [{ name: 'projects', rows: 4 }, { name: 'a_tasks', rows: 8 }] })
  t.equal(run.err(), '')
})

t.test('a missing connection is a usage error; a refused move exits 3 with its reason; a stopped move resumes', async (t) => {
  const tenantId = await world.placeTenant(shared, 1)
  const missing = capture()
  t.equal(await runCli(['move', '--tenant', tenantId, '--from', 'shared', '--to', 'whale'], missing.io), 2)
  t.match(missing.err(), /give --from-url/)
  const badDrain = capture()
  t.equal(await runCli(['move', '--tenant', tenantId, ...connections, '--drain-seconds', '1.5'], badDrain.io), 2)
  t.match(badDrain.err(), /--drain-seconds must be a whole number/)

  const wrongSource = capture()
  t.equal(await runCli(['move', '--tenant', tenantId, ...connections.map((arg) => arg === 'shared' ? 'elsewhere' : arg)], wrongSource.io), 3)
  t.match(wrongSource.err(), /The tenant cannot be moved: tenant .* is placed on shared, not on elsewhere/)

  // A move stopped after its export (a crash), resumed by the command.
  const crash = new Error('crash')
  await t.rejects(moveTenant({ tenantId, source: world.source, target: world.target, placement: { pool: shared.admin }, directory, onStep (step) { if (step === 'exported') throw crash } }), crash)
  const resumed = capture()
  t.equal(await runCli(['move', '--tenant', tenantId, ...connections], resumed.io), 0, resumed.err())
  t.match(resumed.out(), new RegExp(`^Moved tenant ${tenantId} from shared to whale \\(resumed after step exported\\)\\n {2}imported `))
  t.equal((await committedRows(whale, tenantId)).projects?.length, 4)
})
