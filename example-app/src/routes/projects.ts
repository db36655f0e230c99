// /projects: list, create, read, update, delete the tenant's projects. Every query goes through
// request.db, so RLS scopes it to the token's tenant; a project of another tenant is simply absent.
import { asc, eq } from 'drizzle-orm'
import type { FastifyInstance } from 'fastify'
import { ConflictError, NotFoundError, sqlState, UNIQUE_VIOLATION } from '../http-errors.js'
import { projects } from '../schema.js'
import { idParams, paging } from './route-schemas.js'
import type { IdParams, Paging } from './route-schemas.js'

const project = {
  type: 'object',
  required: ['id', 'name', 'description', 'createdAt'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    description: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' }
  }
} as const

const name = { type: 'string', minLength: 1, maxLength: 200 } as const
const description = { type: 'string', maxLength: 2000 } as const

interface ProjectBody { name: string, description?: string }
type ProjectPatch = Partial<ProjectBody>

const columns = { id: projects.id, name: projects.name, description: projects.description, createdAt: projects.createdAt }

function duplicateName (error: unknown): unknown {
  return sqlState(error) === UNIQUE_VIOLATION ? new ConflictError('A project with this name already exists') : error
}

export async function projectRoutes (app: FastifyInstance): Promise<void> {
  app.get<{ Querystring: Paging }>('/projects', {
    schema: { querystring: paging, response: { 200: { type: 'array', items: project } } }
  }, async function listProjects (request) {
    const { limit, offset } = request.query
    return request.db.select(columns).from(projects).orderBy(asc(projects.name)).limit(limit).offset(offset)
  })

  app.post<{ Body: ProjectBody }>('/projects', {
    schema: {
      body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name, description } },
      response: { 201: project }
    }
  }, async function createProject (request, reply) {
    try {
      // tenant_id is not given: its default reads the transaction's tenant.
      const [created] = await request.db.insert(projects).values(request.body).returning(columns)
      return reply.code(201).send(created)
    } catch (error) {
      throw duplicateName(error)
    }
  })

  app.get<{ Params: IdParams }>('/projects/:id', {
    schema: { params: idParams, response: { 200: project } }
  }, async function getProject (request) {
    const [found] = await request.db.select(columns).from(projects).where(eq(projects.id, request.params.id))
    if (found === undefined) throw new NotFoundError('Project')
    return found
  })

  app.patch<{ Params: IdParams, Body: ProjectPatch }>('/projects/:id', {
    schema: {
      params: idParams,
      body: { type: 'object', minProperties: 1, additionalProperties: false, properties: { name, description } },
      response: { 200: project }
    }
  }, async function updateProject (request) {
    let updated
    try {
      [updated] = await request.db.update(projects).set(request.body).where(eq(projects.id, request.params.id)).returning(columns)
    } catch (error) {
      throw duplicateName(error)
    }
    if (updated === undefined) throw new NotFoundError('Project')
    return updated
  })

  app.delete<{ Params: IdParams }>('/projects/:id', {
    schema: { params: idParams, response: { 204: { type: 'null' } } }
  }, async function deleteProject (request, reply) {
    // Its tasks go with it: the (tenant_id, project_id) foreign key cascades.
    const deleted = await request.db.delete(projects).where(eq(projects.id, request.params.id)).returning({ id: projects.id })
    if (deleted.length === 0) throw new NotFoundError('Project')
    return reply.code(204).send()
  })
}
