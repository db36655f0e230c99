// Tasks of a project: /projects/:id/tasks to list and create, /tasks/:id to read, update, delete.
// A task names its project by id; the (tenant_id, project_id) foreign key means that id can only be
// a project of the same tenant, so another tenant's project id answers 404 like an unknown one.
import { asc, eq } from 'drizzle-orm'
import type { FastifyInstance } from 'fastify'
import { ConflictError, FOREIGN_KEY_VIOLATION, NotFoundError, sqlState, UNIQUE_VIOLATION } from '../http-errors.js'
import { projects, tasks } from '../schema.js'
import { idParams, paging } from './route-schemas.js'
import type { IdParams, Paging } from './route-schemas.js'

const task = {
  type: 'object',
  required: ['id', 'projectId', 'title', 'done', 'createdAt'],
  properties: {
    id: { type: 'string' },
    projectId: { type: 'string' },
    title: { type: 'string' },
    done: { type: 'boolean' },
    createdAt: { type: 'string', format: 'date-time' }
  }
} as const

const title = { type: 'string', minLength: 1, maxLength: 500 } as const
const done = { type: 'boolean' } as const

interface TaskBody { title: string, done?: boolean }
type TaskPatch = Partial<TaskBody>

const columns = { id: tasks.id, projectId: tasks.projectId, title: tasks.title, done: tasks.done, createdAt: tasks.createdAt }

function translate (error: unknown): unknown {
  switch (sqlState(error)) {
    case UNIQUE_VIOLATION: return new ConflictError('A task with this title already exists in the project')
    case FOREIGN_KEY_VIOLATION: return new NotFoundError('Project')
    default: return error
  }
}

export async function taskRoutes (app: FastifyInstance): Promise<void> {
  app.get<{ Params: IdParams, Querystring: Paging }>('/projects/:id/tasks', {
    schema: { params: idParams, querystring: paging, response: { 200: { type: 'array', items: task } } }
  }, async function listTasks (request) {
    const [project] = await request.db.select({ id: projects.id }).from(projects).where(eq(projects.id, request.params.id))
    if (project === undefined) throw new NotFoundError('Project')
    const { limit, offset } = request.query
    return request.db.select(columns).from(tasks)
      .where(eq(tasks.projectId, project.id))
      .orderBy(asc(tasks.createdAt), asc(tasks.title))
      .limit(limit).offset(offset)
  })

  app.post<{ Params: IdParams, Body: TaskBody }>('/projects/:id/tasks', {
    schema: {
      params: idParams,
      body: { type: 'object', required: ['title'], additionalProperties: false, properties: { title, done } },
      response: { 201: task }
    }
  }, async function createTask (request, reply) {
    try {
      const [created] = await request.db.insert(tasks).values({ ...request.body, projectId: request.params.id }).returning(columns)
      return reply.code(201).send(created)
    } catch (error) {
      throw translate(error)
    }
  })

  app.get<{ Params: IdParams }>('/tasks/:id', {
    schema: { params: idParams, response: { 200: task } }
  }, async function getTask (request) {
    const [found] = await request.db.select(columns).from(tasks).where(eq(tasks.id, request.params.id))
    if (found === undefined) throw new NotFoundError('Task')
    return found
  })

  app.patch<{ Params: IdParams, Body: TaskPatch }>('/tasks/:id', {
    schema: {
      params: idParams,
      body: { type: 'object', minProperties: 1, additionalProperties: false, properties: { title, done } },
      response: { 200: task }
    }
  }, async function updateTask (request) {
    let updated
    try {
      [updated] = await request.db.update(tasks).set(request.body).where(eq(tasks.id, request.params.id)).returning(columns)
    } catch (error) {
      throw translate(error)
    }
    if (updated === undefined) throw new NotFoundError('Task')
    return updated
  })

  app.delete<{ Params: IdParams }>('/tasks/:id', {
    schema: { params: idParams, response: { 204: { type: 'null' } } }
  }, async function deleteTask (request, reply) {
    const deleted = await request.db.delete(tasks).where(eq(tasks.id, request.params.id)).returning({ id: tasks.id })
    if (deleted.length === 0) throw new NotFoundError('Task')
    return reply.code(204).send()
  })
}
