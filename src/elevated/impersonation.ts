// The request path of support impersonation. A request whose verified token names an actor (the
// RFC 8693 `act.sub` claim by default) is that operator acting as the token's tenant. This module
// decides what such a request costs and leaves behind:
// - the admission statement, which the opening sends after its tenant setting and before the
//   route's first query, in the same round trip. With no live grant it fails (a cast of a marker,
//   as the pre-commit check does), so PostgreSQL skips the route's query and everything up to the
//   Sync, and the transaction is rolled back: a refused request reads and keeps nothing. A grant
//   without write turns the transaction READ ONLY there, before any route statement has run;
//   PostgreSQL refuses to turn it read-write again once a query has taken a snapshot.
// - the audit row of every impersonated request, appended through the system pool when the reply
//   is decided, after the request's transaction has ended. Route SQL runs as the app role, which
//   has no privilege on the trail: it can neither write nor erase such a row, and a rollback of the
//   request's transaction cannot take the row along. Ordinary requests pay for none of this.
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import type { Pool } from 'pg'
import { ImpersonationRefusedError } from '../errors.js'
import type { PipelinedStatement } from '../opening-query.js'
import { accountableText, MAX_ACTOR_LENGTH } from './accountability.js'
import { admissionColumnSql, parseAdmission } from './admission.js'
import type { Admission } from './admission.js'
import { appendAuditSql } from './audit-trail.js'
import type { AuditEvent } from './audit-trail.js'
import type { TableName } from './tables.js'

/** Default `actorClaim`: RFC 8693's actor claim, `{ "act": { "sub": "support:alice@example.com" } }`. */
export const DEFAULT_ACTOR_CLAIM = 'act.sub'

/** Recognised in the failed cast's message: no other error carries it. */
const REFUSED_MARKER = 'fastify-tenant-rls: impersonation refused'

// $1 operator, $2 tenant, $3 the marker. OFFSET 0 keeps the grant subquery a subquery, evaluated
// once. The CASE is not folded when the marker arrives as a constant: its condition is a column.
// The third column sets transaction_read_only only when the grant does not allow writes (CASE
// evaluates the call lazily); with no grant the second column has already failed the statement.
function admissionSql (grantsTable: TableName): string {
  return `SELECT a.g, (CASE WHEN a.g IS NULL THEN $3 ELSE '0' END)::int,
  CASE WHEN NOT (a.g OPERATOR(pg_catalog.->>) 'write')::boolean THEN pg_catalog.set_config('transaction_read_only', 'on', true) END
  FROM (SELECT ${admissionColumnSql(1, { grantsTable: grantsTable.text })} AS g OFFSET 0) a`
}

/** What became of one impersonated request's admission. */
export type AdmissionOutcome = 'unchecked' | 'admitted' | 'refused'

/** One impersonated request: who acts as which tenant, and what the database said. */
export interface Impersonation {
  readonly operator: string
  readonly tenantId: string
  /** 'unchecked' until the first query opens the transaction (a route that never queries reads no tenant data). */
  outcome: AdmissionOutcome
  admission: Admission | null
  /** Set once its audit row is on its way: one row per request. */
  recorded: boolean
  /** What each route statement did, from the server's CommandComplete: never its text or values. */
  statements: StatementAccess[]
}

/** One route statement of an impersonated request, as recorded: its command tag, the tables it names and its row count. */
export interface StatementAccess {
  command: string | null
  /** Relations named after FROM, JOIN, INTO or UPDATE in the statement's text (drizzle quotes them); not those reached through views or functions. */
  tables: string[]
  rows: number | null
}

// A relation after the keywords that introduce one: quoted (drizzle's form, optionally schema-
// qualified) or a plain identifier. Only the statement's text is read, never its bound values.
const RELATION = /\b(?:from|join|into|update)\s+((?:"[^"]{1,63}"|[a-z_][a-z0-9_$]{0,62})(?:\.(?:"[^"]{1,63}"|[a-z_][a-z0-9_$]{0,62}))?)/gi
const MAX_TABLES = 20

function tablesOf (config: unknown): string[] {
  const text = typeof config === 'string' ? config : (config as { text?: unknown } | null)?.text
  if (typeof text !== 'string') return []
  const names = new Set<string>()
  for (const [, name] of text.matchAll(RELATION)) {
    if (name !== undefined && names.size < MAX_TABLES) names.add(name.replaceAll('"', ''))
  }
  return [...names]
}

/** At most this many statements are listed in a request's row; `statementCount` keeps the total. */
const MAX_RECORDED_STATEMENTS = 100

interface QueryOutcome {
  command?: unknown
  rowCount?: unknown
}

/** Wraps the request's query door so that each completed statement is noted for the audit row. */
export function noteStatements<T extends { query (config: unknown, values?: unknown[]): Promise<QueryOutcome> }> (impersonation: Impersonation, queryable: T): T {
  return {
    ...queryable,
    async query (config: unknown, values?: unknown[]) {
      const result = await queryable.query(config, values)
      impersonation.statements.push({
        command: typeof result.command === 'string' ? result.command : null,
        tables: tablesOf(config),
        rows: typeof result.rowCount === 'number' ? result.rowCount : null
      })
      return result
    }
  }
}

/** What the tenant transaction runs in its opening for an impersonated request. */
export interface AdmissionCheck {
  readonly statement: PipelinedStatement
  /** Given the admission statement's first row, once it ran. */
  admitted (row: ReadonlyArray<string | null> | undefined): void
  /** The plugin's error for a failed opening when the admission refused it; undefined for any other failure. */
  refusal (error: unknown): Error | undefined
  /** True once the admission refused: the open failed on a connection left sound. */
  readonly refused: boolean
}

/**
 * The operator a verified token names in `path`, or undefined when it names none (an ordinary
 * request). A claim that is there but is not an accountable name (not a string, empty, too long,
 * padded, control characters) is refused, not ignored: fail closed.
 */
export function actorOf (claims: unknown, readClaim: (claims: unknown) => unknown, systemPool: Pool | undefined): string | undefined {
  const actor = readClaim(claims)
  if (actor === undefined) return undefined
  let operator: string
  try {
    operator = accountableText('the actor claim', actor, MAX_ACTOR_LENGTH, 'support:alice@example.com')
  } catch (error) {
    throw new ImpersonationRefusedError((error as Error).message)
  }
  // Without the system pool no audit row can be written: no impersonation either.
  if (systemPool === undefined) throw new ImpersonationRefusedError('the plugin has no systemPool option, through which impersonated requests are recorded in the audit trail')
  return operator
}

/** The admission of `impersonation`'s transaction; break-glass use is logged at warn on `log`. */
export function admissionCheck (impersonation: Impersonation, grantsTable: TableName, log: FastifyBaseLogger): AdmissionCheck {
  return {
    statement: { text: admissionSql(grantsTable), values: [impersonation.operator, impersonation.tenantId, REFUSED_MARKER] },
    admitted (row) {
      const admission = parseAdmission(typeof row?.[0] === 'string' ? JSON.parse(row[0]) : null)
      // The statement fails without a grant, so this cannot be null unless pg's row is malformed.
      if (admission === null) throw new ImpersonationRefusedError('the admission returned no grant')
      impersonation.outcome = 'admitted'
      impersonation.admission = admission
      if (admission.breakGlass) {
        log.warn({ operator: impersonation.operator, grantId: admission.grantId, write: admission.write },
          'fastify-tenant-rls: break-glass access to this tenant; it stays unreviewed until someone else reviews it')
      }
    },
    refusal (error) {
      const { code, message } = (error ?? {}) as { code?: unknown, message?: unknown }
      if (code !== '22P02' || !String(message).includes(REFUSED_MARKER)) return undefined
      impersonation.outcome = 'refused'
      return new ImpersonationRefusedError(`no live grant lets ${impersonation.operator} act as this tenant`, { cause: error })
    },
    get refused () {
      return impersonation.outcome === 'refused'
    }
  }
}

type Done = (error: Error | null, payload?: unknown) => void

/**
 * Wraps a finishing onSend's `done` so that the request's audit row is appended first, with the
 * status the reply ends with. If the row cannot be written, the reply becomes that error: an
 * impersonated response never leaves without its record.
 */
export function auditBeforeReply (impersonation: Impersonation, request: FastifyRequest, reply: FastifyReply, systemPool: Pool, auditTable: TableName, done: Done): Done {
  return function recordImpersonatedRequest (error, payload) {
    if (impersonation.recorded) return done(error, payload)
    impersonation.recorded = true
    const status = error === null ? reply.statusCode : Number((error as { statusCode?: unknown }).statusCode ?? 500)
    const detail = {
      method: request.method,
      route: request.routeOptions.url ?? null,
      status,
      admission: impersonation.outcome,
      write: impersonation.admission?.write ?? null,
      breakGlass: impersonation.admission?.breakGlass ?? null,
      statementCount: impersonation.statements.length,
      statements: impersonation.statements.slice(0, MAX_RECORDED_STATEMENTS)
    }
    const event: AuditEvent = 'impersonation.request'
    systemPool.query(appendAuditSql(auditTable), [event, impersonation.operator, null, impersonation.tenantId, impersonation.admission?.grantId ?? null, detail])
      .then(() => error, (failure: unknown) => {
        request.log.error({ err: failure }, 'fastify-tenant-rls: the impersonated request could not be recorded in the audit trail; its reply is withheld')
        return error ?? new ImpersonationRefusedError('the request could not be recorded in the audit trail', { cause: failure })
      })
      .then(function writeReply (outcome) {
        // As the plugin's own finishing hook: what done() throws must not become an unhandled rejection.
        try {
          done(outcome, payload)
        } catch (thrown) {
          done(thrown as Error)
        }
      })
  }
}
