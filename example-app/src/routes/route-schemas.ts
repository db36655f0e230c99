// JSON schemas shared by the routes: ids, paging, and the error reply.
export const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', format: 'uuid' } }
} as const

export const paging = {
  type: 'object',
  properties: {
    limit: { type: 'integer', minimum: 1, maximum: 100, default: 50 },
    offset: { type: 'integer', minimum: 0, default: 0 }
  }
} as const

export interface IdParams { id: string }
export interface Paging { limit: number, offset: number }
