// Whether Fastify and Node can write a reply once every onSend hook has run. The plugin's onSend
// hook is the last one, so anything that fails after it (a payload Fastify refuses, a header value
// Node refuses, both typically left by an earlier onSend hook) would fail a reply whose transaction
// is already committed, and a client would retry a write that was kept. Checked before the commit,
// such a reply rolls back instead. The payload rules mirror Fastify 5's reply.js (onSendEnd): rerun
// test/adversarial/hook-order.test.ts on every Fastify upgrade.
import { validateHeaderName, validateHeaderValue } from 'node:http'
import { errorCodes } from 'fastify'
import type { FastifyReply } from 'fastify'

function isStreamOrResponse (payload: object): boolean {
  return typeof (payload as { pipe?: unknown }).pipe === 'function' ||
    typeof (payload as { getReader?: unknown }).getReader === 'function' ||
    Object.prototype.toString.call(payload) === '[object Response]'
}

function payloadError (reply: FastifyReply, payload: unknown): Error | undefined {
  if (payload === undefined || payload === null || typeof payload === 'string' || Buffer.isBuffer(payload)) return undefined
  // A 1xx or 204 reply has no body: Fastify drops whatever payload it is given.
  if (reply.statusCode < 200 || reply.statusCode === 204) return undefined
  if (typeof payload === 'object' && isStreamOrResponse(payload)) return undefined
  return new errorCodes.FST_ERR_REP_INVALID_PAYLOAD_TYPE(typeof payload)
}

function headerError (reply: FastifyReply): Error | undefined {
  try {
    for (const [name, value] of Object.entries(reply.getHeaders())) {
      validateHeaderName(name)
      // Node checks each value of a repeated header as it writes it.
      for (const item of [value ?? []].flat()) validateHeaderValue(name, String(item))
    }
  } catch (error) {
    return error as Error
  }
  return undefined
}

/** The error writing this reply would raise, or undefined when Fastify and Node can write it. */
export function unwritableReplyError (reply: FastifyReply, payload: unknown): Error | undefined {
  return payloadError(reply, payload) ?? headerError(reply)
}
