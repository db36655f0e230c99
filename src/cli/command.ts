// What every subcommand of the `fastify-tenant-rls` binary shares: its shape, the options all of
// them take, the exit codes CI gates on, and the streams it writes to (injected, so tests call a
// subcommand as a function and read what it printed).
import type { ParseArgsConfig } from 'node:util'

/** Exit codes: 0 all good, 1 the check found problems, 2 bad arguments, 3 could not run (connection, file). */
export const EXIT = { ok: 0, findings: 1, usage: 2, failure: 3 } as const
export type ExitCode = typeof EXIT[keyof typeof EXIT]

/** Where a subcommand writes: results to `stdout`, progress and errors to `stderr`. */
export interface CliIo {
  stdout: { write(chunk: string): unknown }
  stderr: { write(chunk: string): unknown }
  /** True when stdout is a terminal: human output may use colour; JSON never does. */
  stdoutIsTty: boolean
  /** True when stderr is a terminal: progress lines are printed only then. */
  stderrIsTty: boolean
}

export type OutputFormat = 'text' | 'json'

/** The parsed command line of one subcommand, after the shared options were taken out. */
export interface ParsedCommand {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>
  positionals: string[]
  format: OutputFormat
}

export interface Subcommand {
  /** The word after the binary's name. */
  name: string
  /** One line for the binary's own `--help`. */
  summary: string
  /** The subcommand's `--help` text: usage line, then one line per option. */
  help: string
  /** Its own options (`--format` and `--help` are added by the dispatcher). */
  options: NonNullable<ParseArgsConfig['options']>
  /** Whether it takes positional arguments (refused otherwise). */
  allowPositionals?: boolean
  run(command: ParsedCommand, io: CliIo): Promise<ExitCode>
}

/** A mistake in the command line: printed with the subcommand's usage, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError'
}
