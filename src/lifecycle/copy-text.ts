// PostgreSQL's COPY text format, the body of an export file: one row per line, columns separated
// by tabs, `\N` for NULL, and backslash escapes for the characters that would break that layout.
// Because raw newlines never occur inside a value, a row ends at every 0x0A byte, which is how
// rows are counted while streaming and how lines are split without decoding the bytes first.

const NEWLINE = 0x0a

/** Counts the rows (newline bytes) in a chunk of COPY text output. */
export function countRows (chunk: Buffer): number {
  let rows = 0
  for (let at = chunk.indexOf(NEWLINE); at !== -1; at = chunk.indexOf(NEWLINE, at + 1)) rows++
  return rows
}

/**
 * Splits a byte stream into lines (without their newline). Each line is a Buffer; a line split
 * across chunks is joined. Bytes after the last newline are returned as a final line, so a
 * truncated file shows up as a line the reader does not expect.
 */
export async function * splitLines (chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer[]> {
  let rest: Buffer | undefined
  for await (const chunk of chunks) {
    const lines: Buffer[] = []
    let start = 0
    for (let at = chunk.indexOf(NEWLINE); at !== -1; at = chunk.indexOf(NEWLINE, start)) {
      const piece = chunk.subarray(start, at)
      lines.push(rest === undefined ? piece : Buffer.concat([rest, piece]))
      rest = undefined
      start = at + 1
    }
    if (start < chunk.length) rest = rest === undefined ? chunk.subarray(start) : Buffer.concat([rest, chunk.subarray(start)])
    if (lines.length > 0) yield lines
  }
  if (rest !== undefined && rest.length > 0) yield [rest]
}

// The escapes COPY ... TO writes in text format (CopyAttributeOutText). COPY FROM would also take
// octal and hex byte escapes, which an export never contains: a file with them was not written by
// exportTenant, and is refused rather than guessed at.
const ESCAPES: Readonly<Record<string, string>> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' }

function unescape (field: string): string {
  let out = ''
  let start = 0
  for (let at = field.indexOf('\\'); at !== -1; at = field.indexOf('\\', start)) {
    const replacement = ESCAPES[field[at + 1] ?? '']
    if (replacement === undefined) throw new CopyTextError(`unexpected escape ${JSON.stringify(field.slice(at, at + 2))}`)
    out += field.slice(start, at) + replacement
    start = at + 2
  }
  return out + field.slice(start)
}

/** A line that is not a row of COPY text output. */
export class CopyTextError extends Error {
  override name = 'CopyTextError'
}

/** Decodes one row of `columns` values: strings as COPY printed them (the type's text form), null for `\N`. */
export function decodeRow (line: Buffer, columns: number): Array<string | null> {
  const fields = line.toString('utf8').split('\t')
  if (fields.length !== columns) throw new CopyTextError(`a row has ${fields.length} values where the table has ${columns} columns`)
  return fields.map((field) => field === '\\N' ? null : field.includes('\\') ? unescape(field) : field)
}
