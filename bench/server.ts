// The server process of the benchmark: every application from apps.ts, listening on its own port
// in this one process, so that all variants share the same process and run. Alongside them a
// control app answers GET /snapshot with each app's wire traffic (from its pg pool's protocol events,
// or from the bytes on its postgres.js sockets), each app's served requests and the process's CPU time;
// the driver takes a snapshot before and after every measurement and divides the difference.
import Fastify from 'fastify'
import { watchWireTraffic } from '../test/helpers/wire-traffic.js'
import type { WireTraffic } from '../test/helpers/wire-traffic.js'
import { buildApps } from './apps.js'
import type { AppSettings } from './apps.js'
import { watchSocketTraffic } from './socket-traffic.js'
import type { SocketTraffic } from './socket-traffic.js'
import type { AppName } from './targets.js'

/** Sent to the driver once everything listens. */
export interface ServerReady {
  ports: Record<AppName, number>
  control: number
}

export interface Snapshot {
  served: Record<string, number>
  /** A postgres.js client has no checkouts, so its traffic has no checkouts nor hold time. */
  traffic: Record<string, WireTraffic | SocketTraffic>
  /** This process's CPU time so far (user + system, µs): every app's, so read it around one target's c=1 phase only. */
  cpuMicros: number
}

const settings = JSON.parse(process.env.BENCH_SERVER_SETTINGS ?? '{}') as AppSettings
const served: Record<string, number> = {}
const watches: Record<string, { read (): WireTraffic | SocketTraffic }> = {}
const apps = await buildApps(settings, {
  pool (name, pool) { watches[name] = watchWireTraffic(pool, { keepCommands: false }) },
  sockets (name) {
    const watch = watchSocketTraffic()
    watches[name] = watch
    return watch.socket
  },
  served (name) { served[name] = (served[name] ?? 0) + 1 }
})

const control = Fastify({ logger: false })
control.get('/snapshot', async (): Promise<Snapshot> => {
  const { user, system } = process.cpuUsage()
  return {
    served: { ...served },
    traffic: Object.fromEntries(Object.entries(watches).map(([name, watch]) => [name, watch.read()])),
    cpuMicros: user + system
  }
})

const ports = {} as Record<AppName, number>
for (const { name, app } of apps) {
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  ports[name] = typeof address === 'object' && address !== null ? address.port : 0
}
await control.listen({ host: '127.0.0.1', port: 0 })
const controlAddress = control.server.address()
const ready: ServerReady = { ports, control: typeof controlAddress === 'object' && controlAddress !== null ? controlAddress.port : 0 }
process.send?.(ready)

process.once('message', () => {
  Promise.all([control.close(), ...apps.map(({ app }) => app.close())]).finally(() => process.exit(0))
})
