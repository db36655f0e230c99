// A CliIo that records what a subcommand prints, for tests that call runCli in-process.
import type { CliIo } from '../../src/cli/command.js'

export interface CapturedIo {
  io: CliIo
  out: () => string
  err: () => string
}

/** stdout is never a terminal; stderrIsTty turns the progress lines on. */
export function captureIo (stderrIsTty = false): CapturedIo {
  const out: string[] = []
  const err: string[] = []
  return {
    io: { stdout: { write: (chunk: string) => out.push(chunk) }, stderr: { write: (chunk: string) => err.push(chunk) }, stdoutIsTty: false, stderrIsTty },
    out: () => out.join(''),
    err: () => err.join('')
  }
}
