// The README's TypeScript blocks compile as written, against the built package, so the docs cannot
// drift from the API. Each block becomes a module in a virtual folder inside the package (so
// `fastify-tenant-rls` resolves to dist as it does for users); nothing is written to disk. A few
// names the prose introduces (an admin pool, an app) and a small schema module are the prelude.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import ts from 'typescript'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const README = readFileSync(join(ROOT, 'README.md'), 'utf8')
const VIRTUAL = join(ROOT, '.readme-snippets')

// What the blocks import as './schema.js': tables with the columns the README's routes use.
const SCHEMA = `
import { pgTable, text, uuid } from 'drizzle-orm/pg-core'
export const projects = pgTable('projects', { tenantId: uuid('tenant_id').notNull(), id: uuid('id').primaryKey().defaultRandom(), name: text('name').notNull() })
export const imports = pgTable('imports', { tenantId: uuid('tenant_id').notNull(), id: uuid('id').primaryKey().defaultRandom(), status: text('status').notNull() })
export const tags = pgTable('tags', { tenantId: uuid('tenant_id').notNull(), id: uuid('id').primaryKey().defaultRandom(), name: text('name').notNull() })
export const auditLog = pgTable('audit_log', { tenantId: uuid('tenant_id').notNull(), id: uuid('id').primaryKey().defaultRandom(), action: text('action').notNull() })
`
// Names the surrounding prose introduces rather than the block itself.
const PRELUDE = `
import type { FastifyInstance } from 'fastify'
import type pg from 'pg'
import type * as Schema from './schema.js'
// An app that augments the package's types also imports it somewhere, which puts it in the program.
import type {} from 'fastify-tenant-rls'
declare global {
  /** The tables of the Usage section, in the sections that use them without importing. */
  const schema: typeof Schema
  /** "As the database owner": a pool of the owner or superuser. */
  const admin: pg.Pool
  /** The isolation kit's two pools. */
  const appPool: pg.Pool
  const adminPool: pg.Pool
  /** The app of the Usage section, in the sections that add routes to it. */
  const app: FastifyInstance
  /** The Usage section's application pool, JWT secret and routes plugin, in the recipes that reuse them. */
  const pool: pg.Pool
  const secret: string
  const routes: (app: FastifyInstance) => Promise<void>
}
`

interface Block { line: number, code: string }

function typeScriptBlocks (markdown: string): Block[] {
  return [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => ({
    // The block's first code line, 1-based.
    line: markdown.slice(0, match.index).split('\n').length + 1,
    code: match[1] ?? ''
  }))
}

const blocks = typeScriptBlocks(README)
const fileOf = (block: Block): string => join(VIRTUAL, `readme-line-${block.line}.ts`)
const virtualFiles = new Map<string, string>([
  [join(VIRTUAL, 'schema.ts'), SCHEMA],
  [join(VIRTUAL, 'prelude.d.ts'), PRELUDE],
  // `export {}` makes every block a module, so blocks do not share top-level names.
  ...blocks.map((block): [string, string] => [fileOf(block), `${block.code}\nexport {}\n`])
])

const parsed = ts.parseJsonConfigFileContent(ts.readConfigFile(join(ROOT, 'tsconfig.json'), ts.sys.readFile).config, ts.sys, ROOT)
const options: ts.CompilerOptions = {
  ...parsed.options,
  noEmit: true,
  declaration: false,
  declarationMap: false,
  sourceMap: false,
  rootDir: ROOT,
  // Docs may show a value without using it.
  noUnusedLocals: false,
  noUnusedParameters: false
}

// Library declarations are parsed once and shared by every program below.
const host = ts.createCompilerHost(options, true)
const parsedFiles = new Map<string, ts.SourceFile | undefined>()
const realGetSourceFile = host.getSourceFile.bind(host)
host.getSourceFile = (fileName, language) => {
  const virtual = virtualFiles.get(fileName)
  if (virtual !== undefined) return ts.createSourceFile(fileName, virtual, language, true)
  if (!parsedFiles.has(fileName)) parsedFiles.set(fileName, realGetSourceFile(fileName, language))
  return parsedFiles.get(fileName)
}
const realFileExists = host.fileExists.bind(host)
host.fileExists = (fileName) => virtualFiles.has(fileName) || realFileExists(fileName)
// Module resolution asks whether a folder exists before it looks for files in it.
const realDirectoryExists = host.directoryExists?.bind(host)
host.directoryExists = (directory) => directory === VIRTUAL || (realDirectoryExists?.(directory) ?? true)
const realReadFile = host.readFile.bind(host)
host.readFile = (fileName) => virtualFiles.get(fileName) ?? realReadFile(fileName)

function errorsOf (roots: string[]): Map<string, string[]> {
  const program = ts.createProgram([join(VIRTUAL, 'prelude.d.ts'), ...roots], options, host)
  const errors = new Map<string, string[]>()
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const file = diagnostic.file?.fileName ?? 'tsc'
    const where = diagnostic.file !== undefined && diagnostic.start !== undefined
      ? `line ${diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start).line + 1} of the block: `
      : ''
    errors.set(file, [...errors.get(file) ?? [], where + ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')])
  }
  return errors
}

// A block that augments the package's types (TenantRlsRegister) would change every other block's
// types: each such block gets a program of its own; the rest share one.
const augmenting = blocks.filter((block) => block.code.includes("declare module 'fastify-tenant-rls'"))
const plain = blocks.filter((block) => !augmenting.includes(block))

t.ok(blocks.length >= 5, `the README has TypeScript blocks (${blocks.length})`)

t.test('the README\'s TypeScript blocks type-check as written', async (t) => {
  const errors = errorsOf(plain.map(fileOf))
  for (const block of augmenting) {
    for (const [file, messages] of errorsOf([fileOf(block)])) errors.set(file, [...errors.get(file) ?? [], ...messages])
  }
  for (const block of blocks) {
    t.same(errors.get(fileOf(block)) ?? [], [], `README.md line ${block.line}`)
    errors.delete(fileOf(block))
  }
  t.same([...errors], [], 'no errors elsewhere (prelude, schema, options)')
})
