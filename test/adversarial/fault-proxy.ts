// A TCP relay between the app's pool and PostgreSQL that can cut a connection at an exact moment:
// the next time the app sends anything. That is how a connection dies in the field (a firewall
// dropping an idle flow, a failover) without the client noticing until it writes, and it makes the
// very first message of a transaction, BEGIN, fail deterministically.
import { connect, createServer } from 'node:net'
import type { Socket } from 'node:net'
import type { Test } from 'tap'

export interface FaultProxy {
  /** `url` with host and port replaced by the relay's. */
  route (url: string): string
  /** Every open connection is cut as soon as the app next writes to it. */
  cutOnNextWrite (): void
  /** How many connections were cut. */
  readonly cuts: number
}

export async function startFaultProxy (t: Test, upstreamUrl: string): Promise<FaultProxy> {
  const upstream = new URL(upstreamUrl)
  const links = new Set<{ client: Socket, server: Socket, armed: boolean }>()
  let cuts = 0
  const relay = createServer((client) => {
    const server = connect(Number(upstream.port), upstream.hostname)
    const link = { client, server, armed: false }
    links.add(link)
    client.on('data', (chunk) => {
      if (link.armed) {
        cuts++
        // Nothing reaches the server; the app sees its connection reset while waiting for an answer.
        client.resetAndDestroy()
        server.destroy()
        return
      }
      server.write(chunk)
    })
    server.on('data', (chunk) => client.write(chunk))
    const close = (): void => { links.delete(link); client.destroy(); server.destroy() }
    client.on('close', close)
    server.on('close', close)
    client.on('error', close)
    server.on('error', close)
  })
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve))
  const address = relay.address()
  if (address === null || typeof address !== 'object') throw new Error('fault proxy has no port')
  t.teardown(() => new Promise<void>((resolve) => {
    for (const link of links) { link.client.destroy(); link.server.destroy() }
    relay.close(() => resolve())
  }))
  return {
    route (url) {
      const target = new URL(url)
      target.hostname = '127.0.0.1'
      target.port = String(address.port)
      return target.toString()
    },
    cutOnNextWrite () {
      for (const link of links) link.armed = true
    },
    get cuts () { return cuts }
  }
}
