// The binary's subcommands, in the order `--help` lists them. Each lives in its own module.
import { auditCommand } from './audit.js'
import type { Subcommand } from './command.js'
import { explainCommand } from './explain.js'

export const SUBCOMMANDS: readonly Subcommand[] = [auditCommand, explainCommand]
