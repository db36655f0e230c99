// The package as npm publishes it: every entry point loads through require() (CommonJS test
// runners, drizzle-kit's config loader), the source maps point at files that ship, and the
// packages the published type declarations import are ones a TypeScript user is told to install.
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  exports: Record<string, unknown>
  dependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  peerDependenciesMeta?: Record<string, { optional?: boolean }>
}

// One export of each entry point, to show the module really loaded, not an empty namespace.
const ENTRY_POINTS: Record<string, string> = {
  'fastify-tenant-rls': 'withTenant',
  'fastify-tenant-rls/schema': 'createTenantTable',
  'fastify-tenant-rls/elevated': 'withSystem',
  'fastify-tenant-rls/audit': 'auditDatabase',
  'fastify-tenant-rls/testing': 'assertTenantIsolation'
}

t.test('the test covers every entry point of the exports map', async (t) => {
  const entries = Object.keys(manifest.exports).filter((key) => key !== './package.json')
  t.same(entries.map((key) => key === '.' ? 'fastify-tenant-rls' : `fastify-tenant-rls/${key.slice(2)}`).sort(), Object.keys(ENTRY_POINTS).sort())
})

for (const [specifier, name] of Object.entries(ENTRY_POINTS)) {
  t.test(`require('${specifier}') works from CommonJS`, async (t) => {
    // A child process with no loader: plain Node, as a CommonJS test runner or config loader runs it.
    const script = `const loaded = require(${JSON.stringify(specifier)}); process.stdout.write(typeof loaded[${JSON.stringify(name)}])`
    const { stdout } = await run(process.execPath, ['-e', script], { cwd: ROOT })
    t.equal(stdout, 'function', `${name} is exported`)
  })
}

interface PackedFile { path: string }

t.test('npm pack ships the license, and every source a source map names', async (t) => {
  // --ignore-scripts: prepack would rebuild dist while other test files import it.
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT })
  const [pack] = JSON.parse(stdout) as Array<{ files: PackedFile[] }>
  const packed = new Set(pack?.files.map((file) => file.path))
  for (const required of ['LICENSE', 'README.md', 'package.json', 'dist/index.js', 'dist/testing.js', 'dist/schema.js']) {
    t.ok(packed.has(required), `${required} is in the package`)
  }
  t.match(readFileSync(join(ROOT, 'LICENSE'), 'utf8'), /^MIT License\n\nCopyright \(c\) 2026 fastify-tenant-rls contributors\n/)

  const maps = [...packed].filter((path) => path.endsWith('.map'))
  t.ok(maps.length > 0, 'the package has source maps')
  const missing = maps.flatMap((map) => {
    const { sources } = JSON.parse(readFileSync(join(ROOT, map), 'utf8')) as { sources: string[] }
    return sources
      .map((source) => relative(ROOT, resolve(ROOT, dirname(map), source)).split('\\').join('/'))
      .filter((source) => !packed.has(source))
      .map((source) => `${map} -> ${source}`)
  })
  t.same(missing, [], 'every file a map names is packed')
  t.notOk([...packed].some((path) => path.startsWith('test/') || path.startsWith('example-app/')), 'no tests or example in the package')
})

// Bare specifiers in the built .d.ts files: what a TypeScript user's compiler must resolve.
function typeImports (): Set<string> {
  const names = new Set<string>()
  const dist = join(ROOT, 'dist')
  for (const file of readdirSync(dist, { recursive: true, encoding: 'utf8' }).filter((path) => path.endsWith('.d.ts'))) {
    for (const [, specifier = ''] of readFileSync(join(dist, file), 'utf8').matchAll(/(?:from |import\()'([^'.][^']*)'/g)) {
      const parts = specifier.split('/')
      names.add((specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/'))
    }
  }
  return names
}

// A package that ships no types of its own (pg) needs its @types package named in package.json,
// or a TypeScript user's build fails on our declarations with "could not find a declaration file".
function shipsOwnTypes (name: string): boolean {
  const own = JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { types?: string, typings?: string }
  return own.types !== undefined || own.typings !== undefined || existsSync(join(ROOT, 'node_modules', name, 'index.d.ts'))
}

t.test('every package the published types import is a dependency, with its @types package when it has no types', async (t) => {
  const declared = { ...manifest.dependencies, ...manifest.peerDependencies }
  const imported = [...typeImports()].filter((name) => !name.startsWith('node:'))
  t.ok(imported.includes('pg'), 'the declarations import pg (the pool option)')
  for (const name of imported) {
    t.ok(name in declared, `${name} is a dependency or peer dependency`)
    if (!shipsOwnTypes(name)) {
      const types = `@types/${name.replace(/^@([^/]+)\//, '$1__')}`
      t.ok(types in declared, `${types} is named for ${name}, which ships no types`)
      // Optional: JavaScript users need no @types package, and npm then installs none for them.
      t.equal(manifest.peerDependenciesMeta?.[types]?.optional, true, `${types} is an optional peer`)
    }
  }
})
