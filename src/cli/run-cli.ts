// The `fastify-tenant-rls` binary's dispatcher: `fastify-tenant-rls <subcommand> [options]`. Parses the command
// line with Node's util.parseArgs, hands the subcommand its options, and turns what it returns or
// throws into an exit code. The work itself lives in library functions the subcommands call.
import { parseArgs } from 'node:util'
import { EXIT, UsageError, type CliIo, type ExitCode, type OutputFormat, type Subcommand } from './command.js'
import { SUBCOMMANDS } from './subcommands.js'

const SHARED_OPTIONS = {
  format: { type: 'string', default: 'text' },
  help: { type: 'boolean', short: 'h', default: false }
} as const

function overview (): string {
  const width = Math.max(0, ...SUBCOMMANDS.map((command) => command.name.length))
  const lines = SUBCOMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`)
  return [
    'Usage: fastify-tenant-rls <command> [options]',
    '',
    'Commands:',
    ...lines,
    '',
    'Every command takes --help, and --format text|json (text by default).',
    'Exit codes: 0 ok, 1 problems found, 2 bad arguments, 3 could not run.',
    ''
  ].join('\n')
}

function parseFormat (value: unknown): OutputFormat {
  if (value === 'text' || value === 'json') return value
  throw new UsageError(`--format must be text or json, not ${JSON.stringify(value)}`)
}

/** Runs one command line (without `node` and the script path) and returns its exit code. */
export async function runCli (argv: readonly string[], io: CliIo): Promise<ExitCode> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout.write(overview())
    return name === undefined ? EXIT.usage : EXIT.ok
  }
  const command: Subcommand | undefined = SUBCOMMANDS.find((candidate) => candidate.name === name)
  if (command === undefined) {
    io.stderr.write(`fastify-tenant-rls: unknown command ${JSON.stringify(name)}\n\n${overview()}`)
    return EXIT.usage
  }
  try {
    const { values, positionals } = parseArgs({
      args: [...rest],
      options: { ...command.options, ...SHARED_OPTIONS },
      allowPositionals: command.allowPositionals ?? false,
      strict: true
    })
    if (values.help === true) {
      io.stdout.write(command.help.endsWith('\n') ? command.help : `${command.help}\n`)
      return EXIT.ok
    }
    const format = parseFormat(values.format)
    return await command.run({ values, positionals, format }, io)
  } catch (error) {
    // parseArgs reports unknown or malformed options with ERR_PARSE_ARGS_* codes.
    const code = (error as { code?: unknown }).code
    if (error instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      io.stderr.write(`fastify-tenant-rls ${name}: ${(error as Error).message}\n\n${command.help}\n`)
      return EXIT.usage
    }
    io.stderr.write(`fastify-tenant-rls ${name}: ${error instanceof Error ? error.message : String(error)}\n`)
    return EXIT.failure
  }
}
