// The export file: one file per tenant export, written as it streams and read back in one pass.
//
//   fastify-tenant-rls export 1          the format and its version
//   #table {"name":…,"columns":[…]}      a table, parents before children
//   <COPY text rows>                     that table's rows of the tenant, as COPY ... TO wrote them
//   \.                                   end of the table (never a row: COPY escapes a backslash)
//   … more tables …
//   #manifest {…}                        tables, row counts, SHA-256 of each table's rows, schema
//                                        fingerprint, server version, snapshot time
//
// The manifest comes last because the checksums are known only once the rows are written; a
// truncated file therefore has none and is refused. Checksums catch corruption and truncation,
// not a hostile editor, who can recompute them: what stops a tampered file from writing another
// tenant's rows is the import running under the tenant's setting (the policies' WITH CHECK).
import { createHash } from 'node:crypto'
import type { Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, unlink } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { ExportFileInvalidError } from '../errors.js'
import type { TenantIdType } from '../tenant-id.js'
import { splitLines } from './copy-text.js'

/** The first line of every export file, with the format's version. */
export const EXPORT_FILE_HEADER = 'fastify-tenant-rls export 1'

const TABLE_PREFIX = '#table '
const MANIFEST_PREFIX = '#manifest '
const SECTION_END = '\\.'

/** One table of an export. */
export interface ExportedTable {
  /** The table's name as the exporting database's catalog spells it. */
  name: string
  /** The columns in the file, in order (generated columns are left out: the server recomputes them). */
  columns: string[]
  rows: number
  /** SHA-256 (hex) of the table's rows as COPY text, in primary-key order. */
  sha256: string
}

/** What an export file says about itself; checked against its data before anything is imported. */
export interface ExportManifest {
  format: 'fastify-tenant-rls export'
  version: 1
  tenantId: string
  tenantIdType: TenantIdType
  tenantColumn: string
  setting: string
  /** When the snapshot was taken (the transaction's start), ISO 8601. */
  createdAt: string
  /** PostgreSQL's server_version where the export was taken. */
  serverVersion: string
  /** SHA-256 of the exported tables' definitions (see schema-fingerprint.ts). */
  schemaFingerprint: string
  /** Parents before children: the order the import inserts in. */
  tables: ExportedTable[]
}

// Writes in large pieces: COPY hands over rows a socket read at a time, and one write per piece
// would cost a system call each.
const FLUSH_BYTES = 1 << 20

/** Writes an export file; the file is created exclusively (an existing file is never overwritten). */
export class ExportFileWriter {
  /** The open file; writes are awaited one at a time. */
  readonly #file: FileHandle
  readonly #path: string
  /** Bytes waiting for the next flush. */
  #pending: Buffer[] = []
  #pendingBytes = 0

  private constructor (file: FileHandle, path: string) {
    this.#file = file
    this.#path = path
  }

  /** Creates `path`; fails with EEXIST if it exists, before any database work. */
  static async create (path: string): Promise<ExportFileWriter> {
    return new ExportFileWriter(await open(path, 'wx'), path)
  }

  async line (text: string): Promise<void> {
    await this.write(Buffer.from(`${text}\n`, 'utf8'))
  }

  async table (name: string, columns: string[]): Promise<void> {
    await this.line(TABLE_PREFIX + JSON.stringify({ name, columns }))
  }

  async endTable (): Promise<void> {
    await this.line(SECTION_END)
  }

  async write (chunk: Buffer): Promise<void> {
    this.#pending.push(chunk)
    this.#pendingBytes += chunk.length
    if (this.#pendingBytes >= FLUSH_BYTES) await this.#flush()
  }

  /** Writes the manifest, then flushes and syncs the file to disk before closing it. */
  async finish (manifest: ExportManifest): Promise<void> {
    await this.line(MANIFEST_PREFIX + JSON.stringify(manifest))
    await this.#flush()
    await this.#file.sync()
    await this.#file.close()
  }

  /** Closes and removes a file whose export failed, so no partial file is mistaken for an export. */
  async discard (): Promise<void> {
    await this.#file.close().catch(() => {})
    await unlink(this.#path).catch(() => {})
  }

  async #flush (): Promise<void> {
    if (this.#pendingBytes === 0) return
    const data = Buffer.concat(this.#pending, this.#pendingBytes)
    this.#pending = []
    this.#pendingBytes = 0
    await this.#file.write(data)
  }
}

/** A table section as the file announces it. */
export interface ExportSection {
  index: number
  name: string
  columns: string[]
}

/** Receives a file's contents while it is read (the import); every call is awaited. */
export interface ExportFileHandler {
  table?(section: ExportSection): Promise<void> | void
  rows?(lines: Buffer[], section: ExportSection): Promise<void> | void
  endTable?(section: ExportSection): Promise<void> | void
}

function invalid (reason: string): never {
  throw new ExportFileInvalidError(reason)
}

function parseJsonLine (line: string, prefix: string): unknown {
  try {
    return JSON.parse(line.slice(prefix.length))
  } catch {
    return invalid(`the line starting ${JSON.stringify(line.slice(0, 40))} is not valid JSON`)
  }
}

const isStrings = (value: unknown): value is string[] => Array.isArray(value) && value.every((item) => typeof item === 'string')

function parseSection (line: string, index: number): ExportSection {
  const { name, columns } = (parseJsonLine(line, TABLE_PREFIX) ?? {}) as Record<string, unknown>
  if (typeof name !== 'string' || !isStrings(columns) || columns.length === 0) invalid(`table section ${index + 1} has no name or no columns`)
  return { index, name, columns }
}

function parseManifest (line: string): ExportManifest {
  const manifest = parseJsonLine(line, MANIFEST_PREFIX) as Partial<ExportManifest> | null
  const strings = ['tenantId', 'tenantIdType', 'tenantColumn', 'setting', 'createdAt', 'serverVersion', 'schemaFingerprint'] as const
  if (manifest === null || typeof manifest !== 'object' || manifest.format !== 'fastify-tenant-rls export' || manifest.version !== 1 ||
    !strings.every((key) => typeof manifest[key] === 'string') || !Array.isArray(manifest.tables) ||
    !manifest.tables.every((table) => typeof table?.name === 'string' && isStrings(table.columns) && Number.isSafeInteger(table.rows) && typeof table.sha256 === 'string')) {
    invalid('the manifest is incomplete or of another version')
  }
  return manifest as ExportManifest
}

interface SectionTotals { section: ExportSection, rows: number, hash: Hash }

function compareWithManifest (manifest: ExportManifest, totals: Array<{ section: ExportSection, rows: number, sha256: string }>): void {
  if (manifest.tables.length !== totals.length) invalid(`the manifest lists ${manifest.tables.length} table(s), the file holds ${totals.length}`)
  manifest.tables.forEach((listed, index) => {
    const found = totals[index] as typeof totals[number]
    if (listed.name !== found.section.name || listed.columns.join('\t') !== found.section.columns.join('\t')) {
      invalid(`table ${index + 1} is ${found.section.name} in the file but ${listed.name} in the manifest, or its columns differ`)
    }
    if (listed.rows !== found.rows) invalid(`${listed.name}: the manifest says ${listed.rows} row(s), the file holds ${found.rows}`)
    if (listed.sha256 !== found.sha256) invalid(`${listed.name}: the rows do not match the manifest's checksum`)
  })
}

/**
 * Reads an export file from start to end, handing its tables and rows to `handler`, and returns
 * its manifest once every table's row count and checksum matched it. Throws
 * FST_TENANT_RLS_EXPORT_INVALID for anything else (a missing or truncated part, a mismatch),
 * after the handler has seen the data: a caller writing rows must keep them uncommitted until then.
 */
export async function readExportFile (path: string, handler: ExportFileHandler = {}): Promise<ExportManifest> {
  let state: 'header' | 'between' | 'data' | 'end' = 'header'
  let manifest: ExportManifest | undefined
  let current: SectionTotals | undefined
  const totals: Array<{ section: ExportSection, rows: number, sha256: string }> = []
  const newline = Buffer.from('\n')

  for await (const lines of splitLines(createReadStream(path, { highWaterMark: FLUSH_BYTES }))) {
    let rows: Buffer[] = []
    for (const line of lines) {
      if (state === 'data' && current !== undefined) {
        if (line.length === 2 && line.toString('latin1') === SECTION_END) {
          if (rows.length > 0) await handler.rows?.(rows, current.section)
          rows = []
          await handler.endTable?.(current.section)
          totals.push({ section: current.section, rows: current.rows, sha256: current.hash.digest('hex') })
          current = undefined
          state = 'between'
        } else {
          current.hash.update(line)
          current.hash.update(newline)
          current.rows++
          rows.push(line)
        }
        continue
      }
      const text = line.toString('utf8')
      if (state === 'header') {
        if (text !== EXPORT_FILE_HEADER) invalid(`it does not start with "${EXPORT_FILE_HEADER}" (not an export file, or another version)`)
        state = 'between'
      } else if (state === 'between' && text.startsWith(TABLE_PREFIX)) {
        current = { section: parseSection(text, totals.length), rows: 0, hash: createHash('sha256') }
        await handler.table?.(current.section)
        state = 'data'
      } else if (state === 'between' && text.startsWith(MANIFEST_PREFIX)) {
        manifest = parseManifest(text)
        state = 'end'
      } else {
        invalid(state === 'end' ? 'there is data after the manifest' : `unexpected line ${JSON.stringify(text.slice(0, 40))}`)
      }
    }
    if (rows.length > 0 && current !== undefined) await handler.rows?.(rows, current.section)
  }
  if (state === 'header') invalid('the file is empty')
  if (manifest === undefined) invalid('the file ends before its manifest (truncated?)')
  compareWithManifest(manifest, totals)
  return manifest
}
