// Recognises a route statement that would end the tenant transaction: COMMIT, END, ROLLBACK (but
// not ROLLBACK TO a savepoint), ABORT, PREPARE TRANSACTION. Sent by route code, such a statement
// commits whatever the transaction did before the plugin's pre-commit check could look at it (a
// stored role setting, say), and leaves the rest of the request outside any transaction. It can
// only appear as the first token of a top-level statement: inside a function or a DO block
// PostgreSQL refuses to end a transaction that the client opened ("invalid transaction
// termination"), and a query through request.db holds exactly one statement (extended protocol).
// So looking at the first word, after whitespace and comments, is complete.

const ENDING_KEYWORDS = new Set(['commit', 'end', 'abort', 'rollback', 'prepare'])
// What may follow ROLLBACK or PREPARE without ending the transaction.
const OPTIONAL_NOISE = new Set(['work', 'transaction'])

/** Splits `text` into its leading words, skipping whitespace and (nested) comments as PostgreSQL does. */
function leadingWords (text: string, count: number): string[] {
  const words: string[] = []
  let index = 0
  while (index < text.length && words.length < count) {
    const char = text[index] as string
    // Skipping more whitespace than PostgreSQL does is safe: a statement it would reject anyway
    // can only be refused a second time here.
    if (/\s/.test(char)) {
      index += 1
    } else if (text.startsWith('--', index)) {
      const end = text.indexOf('\n', index)
      index = end === -1 ? text.length : end + 1
    } else if (text.startsWith('/*', index)) {
      index = skipBlockComment(text, index)
    } else {
      const match = /^[\p{L}\p{N}_$]+/u.exec(text.slice(index, index + 64))
      if (match === null) break
      words.push(match[0].toLowerCase())
      index += match[0].length
    }
  }
  return words
}

// PostgreSQL's block comments nest; an unterminated one runs to the end of the text.
function skipBlockComment (text: string, start: number): number {
  let depth = 0
  let index = start
  while (index < text.length) {
    if (text.startsWith('/*', index)) {
      depth += 1
      index += 2
    } else if (text.startsWith('*/', index)) {
      depth -= 1
      index += 2
      if (depth === 0) return index
    } else {
      index += 1
    }
  }
  return index
}

/** Whether `text` is a statement that would end (or prepare to end) the current transaction. */
export function endsTransaction (text: string): boolean {
  const [first, second, third] = leadingWords(text, 3)
  if (first === undefined || !ENDING_KEYWORDS.has(first)) return false
  if (first === 'prepare') return second === 'transaction'
  if (first === 'rollback') {
    // ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name only undoes a savepoint.
    const next = second !== undefined && OPTIONAL_NOISE.has(second) ? third : second
    return next !== 'to'
  }
  return true
}
