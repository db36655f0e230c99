// The export file's row format without a database: COPY text lines split across chunks, the
// escapes COPY writes, NULL against a literal backslash-N, and what is refused.
import t from 'tap'
import { countRows, CopyTextError, decodeRow, splitLines } from '../../src/lifecycle/copy-text.js'

async function * chunks (...parts: string[]): AsyncGenerator<Buffer> {
  for (const part of parts) yield Buffer.from(part, 'utf8')
}

async function collect (iterable: AsyncIterable<Buffer[]>): Promise<string[]> {
  const lines: string[] = []
  for await (const batch of iterable) lines.push(...batch.map((line) => line.toString('utf8')))
  return lines
}

t.test('lines split across chunks, a multi-byte character included, are joined', async (t) => {
  const zurich = Buffer.from('Zürich\n', 'utf8')
  async function * split (): AsyncGenerator<Buffer> {
    yield Buffer.from('first\tro')
    yield Buffer.from('w\nsec')
    yield zurich.subarray(0, 2) // cuts the ü in half
    yield zurich.subarray(2)
    yield Buffer.from('\n\nlast without newline')
  }
  t.same(await collect(splitLines(split())), ['first\trow', 'secZürich', '', '', 'last without newline'])
  t.same(await collect(splitLines(chunks('a\n', 'b\n'))), ['a', 'b'])
})

t.test('rows are counted by their newline bytes', async (t) => {
  t.equal(countRows(Buffer.from('a\tb\nc\\nd\n\n')), 3, 'an escaped newline is not a row')
  t.equal(countRows(Buffer.from('no newline')), 0)
})

t.test('values are decoded as COPY wrote them', async (t) => {
  t.same(decodeRow(Buffer.from('plain\t\\N\t\\\\N\ta\\tb\\nc\\\\d\\r\\b\\f\\v\t'), 5), ['plain', null, '\\N', 'a\tb\nc\\d\r\b\f\v', ''])
  t.same(decodeRow(Buffer.from('\\\\.'), 1), ['\\.'], 'the end-of-table marker as a value')
})

t.test('what COPY TO never writes is refused', async (t) => {
  t.throws(() => decodeRow(Buffer.from('a\\x41'), 1), CopyTextError)
  t.throws(() => decodeRow(Buffer.from('a\\101'), 1), /unexpected escape "\\\\1"/)
  t.throws(() => decodeRow(Buffer.from('trailing\\'), 1), /unexpected escape/)
  t.throws(() => decodeRow(Buffer.from('a\tb'), 3), /2 values where the table has 3 columns/)
})
