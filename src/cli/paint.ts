// ANSI colour for human output, applied only when the caller says the stream is a terminal.
const CODES = { red: 31, green: 32, yellow: 33, dim: 2 } as const

/** `text` in `colour` when `enabled`, unchanged otherwise. */
export function paint (text: string, colour: keyof typeof CODES, enabled: boolean): string {
  return enabled ? `\u001b[${CODES[colour]}m${text}\u001b[0m` : text
}
