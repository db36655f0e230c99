// The binary's subcommands, in the order `--help` lists them. Each lives in its own module.
import type { Subcommand } from './command.js'

export const SUBCOMMANDS: readonly Subcommand[] = []
