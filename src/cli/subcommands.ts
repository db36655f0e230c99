// The binary's subcommands, in the order `--help` lists them. Each lives in its own module.
import { auditCommand } from './audit.js'
import type { Subcommand } from './command.js'
import { eraseCommand } from './erase.js'
import { explainCommand } from './explain.js'
import { exportCommand } from './export.js'
import { importCommand } from './import.js'
import { moveCommand } from './move.js'

export const SUBCOMMANDS: readonly Subcommand[] = [auditCommand, explainCommand, exportCommand, importCommand, eraseCommand, moveCommand]
