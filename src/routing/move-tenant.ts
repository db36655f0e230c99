// Moving one tenant to another database ("graduating a whale"), as a sequence of steps recorded in
// the tenant's placement row, so a run that stops at any point is finished by running it again:
//
//   started   the target has the same tables (schema fingerprint) and nothing of the tenant
//   marked    source status 'moving': every request of the tenant there gets 503 + Retry-After
//   exported  the tenant's rows, from one snapshot, into the export file
//   imported  the target's tenants row (status 'moving') and the rows, in one transaction
//   verified  source and target checksums equal the export's (a late write on the source: redo)
//   flipped   target status 'active', then the placement names the target (with the flip's time)
//   drained   waited until every process's cached placement is newer than the flip
//   erasing   the source's rows still equal the export's (no write was lost after all)
//   erased    the tenant erased from the source; then the record is cleared
//
// A process that still routes the tenant to the source finds it 'moving' there (503, never data,
// never another status) until the drain is over, which is why the erasure waits for it.
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import type { Pool, PoolClient } from 'pg'
import { InvalidOptionError, MoveDivergedError, MoveRefusedError, SchemaMismatchError } from '../errors.js'
import { eraseTenant, inspectTenantErasure } from '../lifecycle/erase.js'
import { exportTenant, tenantChecksums } from '../lifecycle/export.js'
import type { TenantChecksums } from '../lifecycle/export.js'
import { readExportFile } from '../lifecycle/export-file.js'
import type { ExportManifest } from '../lifecycle/export-file.js'
import { importTenant } from '../lifecycle/import.js'
import { tenantScope } from '../lifecycle/tenant-scope.js'
import type { TenantScope, TenantScopeOptions } from '../lifecycle/tenant-scope.js'
import { resolveTenantTables, schemaFingerprint, tenantRowCounts } from '../lifecycle/tenant-tables.js'
import { validateTenantStatus } from '../tenant-status/options.js'
import type { ResolvedTenantStatus, TenantStatusOptions } from '../tenant-status/options.js'
import { MoveRecord } from './move-record.js'
import { DATABASE_NAME, MOVE_STEPS, placementTableName } from './placement.js'
import type { MoveStep } from './placement.js'
import { ROUTE_CACHE_MS } from './tenant-router.js'

/** One side of a move. */
export interface MoveDatabase {
  /** The database's name in the placement table (and in placementRouting's `pools`). */
  name: string
  /** The application role's pool there: export, import and checksums run through it, under RLS. */
  appPool: Pool
  /** A role that may write the tenants table and erase the tenant there (the tables' owner, or an admin). */
  adminPool: Pool
}

/** Options of `moveTenant`: the scope options of the lifecycle tools, the two databases, the placement table. */
export interface MoveTenantOptions extends Omit<TenantScopeOptions, 'pool'> {
  source: MoveDatabase
  target: MoveDatabase
  /** The placement table, and a pool of a role that may update it (its owner). */
  placement: { pool: Pool, table?: string }
  /** The tenants table and its status column, as the plugin's `tenantStatus` option (`retryAfter` aside). Default `public.tenants`. */
  tenantStatus?: Omit<TenantStatusOptions, 'retryAfter'>
  /** Folder for the export file, kept until the move is done so that a resumed move finds it. */
  directory: string
  /**
   * Milliseconds between the flip and the source's erasure: at least the longest `routeCacheMs` of
   * the processes routing tenants, plus their longest request. Default 40000 (the default cache, 30 s, plus 10 s).
   */
  drainMs?: number
  /** Called after each step is recorded (progress, or a test's crash); awaited. */
  onStep?: (step: MoveStep) => void | Promise<void>
}

/** What a move did. */
export interface MoveReport {
  tenantId: string
  source: string
  target: string
  /** The step a previous run had recorded, when this run resumed it. */
  resumedFrom: MoveStep | null
  /** The steps this run did, with their duration. */
  steps: Array<{ step: MoveStep, ms: number }>
  /** The tenant's tables as moved: rows and checksums, equal on both sides. */
  tables: Array<{ name: string, rows: number, sha256: string }>
}

/** The default drain: the router's cache age, plus time for a request routed just before the flip to open its transaction. */
export const DEFAULT_DRAIN_MS = ROUTE_CACHE_MS + 10_000

interface Move {
  scope: TenantScope
  status: ResolvedTenantStatus
  options: MoveTenantOptions
  file: string
  record: MoveRecord
  /** The export's manifest, once known (read back from the file on a resumed run). */
  manifest?: ExportManifest
}

function checkedDatabase (role: string, side: unknown): MoveDatabase {
  const database = side as Partial<MoveDatabase> | null
  if (database === null || typeof database !== 'object' || typeof database.name !== 'string' || !DATABASE_NAME.test(database.name)) {
    throw new InvalidOptionError(`${role}.name must be the database's name in the placement table, got ${JSON.stringify(database?.name)}`)
  }
  for (const pool of ['appPool', 'adminPool'] as const) {
    if (typeof database[pool]?.connect !== 'function') throw new InvalidOptionError(`${role}.${pool} must be a pg.Pool`)
  }
  return database as MoveDatabase
}

/**
 * Moves one tenant from `source` to `target` and records each step in its placement row; run it
 * again after a failure or a crash and it goes on from the step reached. Refuses (nothing changed,
 * FST_TENANT_RLS_MOVE_REFUSED or FST_TENANT_RLS_SCHEMA_MISMATCH) a tenant that is not placed on the
 * source or has no tenants row there, a target with other tables or with rows of the tenant, a move under way to another target.
 * Stops with FST_TENANT_RLS_MOVE_DIVERGED, before erasing anything, if the source changed after the export.
 */
export async function moveTenant (options: MoveTenantOptions): Promise<MoveReport> {
  const source = checkedDatabase('source', options.source)
  const target = checkedDatabase('target', options.target)
  if (source.name === target.name) throw new InvalidOptionError('source and target are the same database')
  if (typeof options.directory !== 'string' || options.directory === '') throw new InvalidOptionError('directory must be the folder for the export file')
  const drainMs = options.drainMs ?? DEFAULT_DRAIN_MS
  if (!Number.isInteger(drainMs) || drainMs < 0) throw new InvalidOptionError(`drainMs must be a whole number of milliseconds, got ${JSON.stringify(drainMs)}`)
  const scope = tenantScope({ ...options, pool: source.appPool })
  const status = validateTenantStatus({ table: 'public.tenants', ...options.tenantStatus }) as ResolvedTenantStatus
  const table = placementTableName(options.placement?.table)
  if (typeof options.placement?.pool?.connect !== 'function') throw new InvalidOptionError('placement.pool must be a pg.Pool of a role that may update the placement table')

  const record = await MoveRecord.lock(options.placement.pool, table, scope.tenantId)
  try {
    const row = await record.read()
    if (row === undefined) throw new MoveRefusedError(`tenant ${scope.tenantId} has no row in ${table.text}`)
    const move: Move = { scope, status, options, record, file: row.moveFile ?? join(options.directory, `tenant-${scope.tenantId}.move-export`) }
    const resumedFrom = row.moveStep
    if (resumedFrom === null) {
      if (row.database !== source.name) throw new MoveRefusedError(`tenant ${scope.tenantId} is placed on ${row.database}, not on ${source.name}`)
    } else if (row.moveTarget !== target.name) {
      throw new MoveRefusedError(`a move of tenant ${scope.tenantId} to ${String(row.moveTarget)} is under way (step ${resumedFrom}): run it again with that target`)
    }
    // Checked on every run: a migration applied to one side between two runs must stop the move too.
    await sameTables(move)
    if (resumedFrom === null) {
      await targetHoldsNothing(move)
      await sourceHoldsTenantsRow(move)
    }

    const steps: MoveReport['steps'] = []
    for (const step of MOVE_STEPS.slice(resumedFrom === null ? 0 : MOVE_STEPS.indexOf(resumedFrom) + 1)) {
      const began = performance.now()
      await STEPS[step](move, drainMs)
      await record.record(step)
      steps.push({ step, ms: Math.round(performance.now() - began) })
      await options.onStep?.(step)
    }
    const manifest = await manifestOf(move)
    await record.finish()
    await rm(move.file, { force: true })
    return {
      tenantId: scope.tenantId,
      source: source.name,
      target: target.name,
      resumedFrom,
      steps,
      tables: manifest.tables.map(({ name, rows, sha256 }) => ({ name, rows, sha256 }))
    }
  } finally {
    await record.release()
  }
}

// What each step does; each is safe to repeat, since a crash may come after the work and before its record.
const STEPS: Record<MoveStep, (move: Move, drainMs: number) => Promise<void>> = {
  async started ({ record, options, file }) {
    await record.start(options.target.name, file)
  },
  async marked (move) {
    const marked = await setStatus(move.options.source.adminPool, move, 'moving')
    if (!marked) throw new MoveRefusedError(`the source's ${move.status.table.text} has no row for tenant ${move.scope.tenantId}`)
  },
  async exported (move) {
    // A previous run may have stopped mid-export: its file is incomplete, and exportTenant never overwrites.
    await rm(move.file, { force: true })
    move.manifest = await exportTenant({ ...lifecycleOptions(move), pool: move.options.source.appPool, tenantId: move.scope.tenantId, out: move.file })
  },
  async imported (move) {
    await copyTenantsRow(move)
    // replace: rows a previous run imported; before the flip, nothing else of the tenant is on the target.
    await importTenant({ ...lifecycleOptions(move), pool: move.options.target.appPool, from: move.file, tenantId: move.scope.tenantId, replace: true })
  },
  async verified (move) {
    const manifest = await manifestOf(move)
    const target = await checksumsOn(move, move.options.target.appPool)
    const differs = difference(manifest, target)
    if (differs !== undefined) throw new MoveDivergedError(`the target's ${differs}`)
    const late = difference(manifest, await checksumsOn(move, move.options.source.appPool))
    if (late !== undefined) {
      // A transaction that began before the tenant was marked committed after the export: export again.
      await move.record.record('marked')
      throw new MoveDivergedError(`the source's ${late}; run the move again to export again`)
    }
    await erasureMatchesExport(move, manifest).catch(async (error: unknown) => {
      // Fixed by exporting again, with the options that let the application role see every row.
      await move.record.record('marked')
      throw error
    })
  },
  async flipped (move) {
    // Active before the flip: the first request routed to the target finds it open.
    await setStatus(move.options.target.adminPool, move, 'active')
  },
  async drained ({ record }, drainMs) {
    await delay(await record.drainLeft(drainMs))
  },
  async erasing (move) {
    const source = await checksumsOn(move, move.options.source.appPool)
    const manifest = await manifestOf(move)
    const differs = difference(manifest, source)
    if (differs !== undefined) throw new MoveDivergedError(`the source's ${differs}; the target lacks that change: reconcile it by hand, then run again`)
    await erasureMatchesExport(move, manifest)
  },
  async erased (move) {
    await eraseTenant({ ...lifecycleOptions(move), pool: move.options.source.adminPool, tenantId: move.scope.tenantId, confirm: move.scope.tenantId, tenantsTable: move.status.table.text })
  }
}

/** The scope options the lifecycle tools take, as checked. */
function lifecycleOptions ({ scope, options }: Move): Omit<TenantScopeOptions, 'pool' | 'tenantId'> {
  return {
    ...(scope.tables === undefined ? {} : { tables: scope.tables }),
    schema: scope.schema,
    tenantColumn: scope.tenantColumn,
    setting: scope.setting,
    tenantIdType: scope.tenantIdType,
    ...(options.signedContext === undefined ? {} : { signedContext: options.signedContext }),
    // On Citus every job of the move must set the tenant with SET LOCAL, or the workers see none of its rows.
    openWith: scope.openWith
  }
}

async function manifestOf (move: Move): Promise<ExportManifest> {
  // Read back on a resumed run: the read checks the file against its own manifest too.
  move.manifest ??= await readExportFile(move.file)
  return move.manifest
}

function checksumsOn (move: Move, pool: Pool): Promise<TenantChecksums> {
  return tenantChecksums({ ...lifecycleOptions(move), pool, tenantId: move.scope.tenantId })
}

/** The first table whose rows differ from the export's, in words; undefined when none does. */
function difference (manifest: ExportManifest, found: TenantChecksums): string | undefined {
  for (const table of manifest.tables) {
    const there = found.tables.find((candidate) => candidate.name === table.name)
    if (there?.sha256 !== table.sha256) return `${table.name} holds ${there?.rows ?? 0} row(s) of the tenant, the export ${table.rows}`
  }
  return undefined
}

/**
 * Refuses unless the erasure would delete exactly the rows the export holds. The export reads
 * through the application role, the erasure deletes through the admin role: if the application
 * role sees fewer rows (signed policies without `signedContext`, a policy hiding some rows), the
 * checksums agree on what it saw while the erasure would delete rows nobody copied.
 */
async function erasureMatchesExport (move: Move, manifest: ExportManifest): Promise<void> {
  const { tables } = await inspectTenantErasure({ ...lifecycleOptions(move), pool: move.options.source.adminPool, tenantId: move.scope.tenantId, tenantsTable: move.status.table.text })
  for (const table of manifest.tables) {
    const erased = tables.find((candidate) => candidate.table === table.name)?.rows ?? 0
    if (erased !== table.rows) {
      throw new MoveRefusedError(`the source holds ${erased} row(s) of ${table.name} for the tenant, the export only ${table.rows}: the application role does not see them all (signed policies need signedContext); nothing was erased`)
    }
  }
}

async function setStatus (pool: Pool, { status, scope }: Pick<Move, 'status' | 'scope'>, value: 'moving' | 'active'): Promise<boolean> {
  const { rowCount } = await pool.query(`UPDATE ${status.table.sql} SET ${status.column} = $2 WHERE ${status.key} = $1`, [scope.tenantId, value])
  return rowCount === 1
}

/** The source's tenants row, put on the target with status 'moving' (kept if a previous run put it there). */
async function copyTenantsRow ({ options, status, scope }: Move): Promise<void> {
  const { rows: [row] } = await options.source.adminPool.query<{ row: unknown }>(
    `SELECT pg_catalog.to_jsonb(t) AS row FROM ${status.table.sql} AS t WHERE ${status.key} = $1`, [scope.tenantId])
  if (row === undefined) throw new MoveRefusedError(`the source's ${status.table.text} has no row for tenant ${scope.tenantId}`)
  await options.target.adminPool.query(`INSERT INTO ${status.table.sql} SELECT * FROM pg_catalog.jsonb_populate_record(NULL::${status.table.sql}, $1) ON CONFLICT DO NOTHING`, [row.row])
  await setStatus(options.target.adminPool, { status, scope }, 'moving')
}

async function onClient<T> (pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  try {
    return await work(client)
  } finally {
    client.release()
  }
}

/** Refuses a target whose tenant tables differ from the source's (the same fingerprint the import checks). */
async function sameTables ({ scope, options }: Move): Promise<void> {
  const [here, there] = await Promise.all([options.source.appPool, options.target.appPool].map((pool) =>
    onClient(pool, async (client) => schemaFingerprint(await resolveTenantTables(client, scope)))))
  if (here !== there) throw new SchemaMismatchError(`the target's tenant tables differ from the source's (schema fingerprint ${String(there).slice(0, 12)}… there, ${String(here).slice(0, 12)}… here)`)
}

/** Refuses, before the move is recorded, a tenant whose tenants row is missing on the source: the 'marked' step could not mark it. */
async function sourceHoldsTenantsRow ({ scope, options, status }: Move): Promise<void> {
  const { rowCount } = await options.source.adminPool.query(`SELECT 1 FROM ${status.table.sql} WHERE ${status.key} = $1`, [scope.tenantId])
  if (rowCount === 0) throw new MoveRefusedError(`the source's ${status.table.text} has no row for tenant ${scope.tenantId}`)
}

/** Refuses a target that already holds the tenant's row or rows: a move never overwrites anything. */
async function targetHoldsNothing ({ scope, options, status }: Move): Promise<void> {
  const held = await onClient(options.target.adminPool, async (client) => {
    const counts = (await tenantRowCounts(client, await resolveTenantTables(client, scope), scope, 'count')).filter(({ rows }) => rows > 0)
    const { rowCount } = await client.query(`SELECT 1 FROM ${status.table.sql} WHERE ${status.key} = $1`, [scope.tenantId])
    return [...counts.map(({ table, rows }) => `${table}: ${rows}`), ...(rowCount === 0 ? [] : [`${status.table.text}: 1`])]
  })
  if (held.length > 0) throw new MoveRefusedError(`the target already holds tenant ${scope.tenantId} (${held.join(', ')})`)
}
