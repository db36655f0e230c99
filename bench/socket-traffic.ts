// Counts what a postgres.js client's connections exchange with PostgreSQL. postgres.js emits no
// protocol events (pg does, and test/helpers/wire-traffic.ts reads those), so this reads the bytes
// the server sends on sockets it hands to postgres.js through its documented `socket` option:
// every backend message is a type byte and a four-byte length that counts itself; a ReadyForQuery
// ('Z') ends a round trip, a CommandComplete ('C') a statement. postgres.js has no checkout: it
// queues (and pipelines) queries onto its connections, so there is no hold time to count.
import { once } from 'node:events'
import { connect } from 'node:net'
import type { Socket } from 'node:net'

export interface SocketTraffic {
  roundTrips: number
  statements: number
}

export interface SocketWatch {
  /** For postgres.js's `socket` option: a connected TCP socket, counted from the end of the handshake. */
  socket (options: { host: readonly string[], port: readonly number[] }): Promise<Socket>
  read (): SocketTraffic
}

const READY_FOR_QUERY = 0x5a
const COMMAND_COMPLETE = 0x43
const HEADER = 5

/** Feeds one connection's incoming bytes through a message splitter; `count` sees each message type. */
function splitMessages (count: (type: number) => void): (chunk: Buffer) => void {
  // A header may arrive split across chunks; a body is only skipped, never kept.
  let partial = Buffer.alloc(0)
  let bodyLeft = 0
  return (chunk) => {
    let at = 0
    while (at < chunk.length) {
      if (bodyLeft > 0) {
        const skipped = Math.min(bodyLeft, chunk.length - at)
        bodyLeft -= skipped
        at += skipped
        continue
      }
      let header = chunk
      let start = at
      if (partial.length > 0 || chunk.length - at < HEADER) {
        const taken = Math.min(HEADER - partial.length, chunk.length - at)
        partial = Buffer.concat([partial, chunk.subarray(at, at + taken)])
        at += taken
        if (partial.length < HEADER) return
        header = partial
        start = 0
        partial = Buffer.alloc(0)
      } else {
        at += HEADER
      }
      count(header[start] ?? 0)
      bodyLeft = header.readInt32BE(start + 1) - 4
    }
  }
}

export function watchSocketTraffic (): SocketWatch {
  const traffic: SocketTraffic = { roundTrips: 0, statements: 0 }
  return {
    async socket ({ host, port }) {
      const socket = connect(port[0] ?? 5432, host[0] ?? '127.0.0.1')
      await once(socket, 'connect')
      // The startup exchange ends with the first ReadyForQuery: only the client's own queries count.
      let handshaking = true
      socket.on('data', splitMessages((type) => {
        if (type === READY_FOR_QUERY && handshaking) handshaking = false
        else if (type === READY_FOR_QUERY) traffic.roundTrips += 1
        else if (type === COMMAND_COMPLETE && !handshaking) traffic.statements += 1
      }))
      return socket
    },
    read: () => ({ ...traffic })
  }
}
