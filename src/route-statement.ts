// Classifies a route statement by its first words, before it is sent. A query through request.db
// holds exactly one statement (extended protocol), and PostgreSQL's grammar decides a statement's
// kind by its first keyword, so the first words, after whitespace and comments, are enough:
// - 'ends-transaction': COMMIT, END, ROLLBACK (but not ROLLBACK TO a savepoint), ABORT, PREPARE
//   TRANSACTION. Sent by route code, it would commit whatever the transaction did before the
//   plugin's pre-commit check could look at it, and leave the rest of the request outside any
//   transaction. Inside a function or a DO block PostgreSQL refuses to end a transaction that the
//   client opened ("invalid transaction termination"), so this is the only place one can come from.
// - 'query': queries and data changes (SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES, TABLE).
//   The only kind worth keeping as a prepared statement (route-query-names.ts): PostgreSQL plans them.
// - 'plain': the other harmless ones, savepoints, FETCH/MOVE, SET/RESET/SHOW, LOCK.
//   Neither 'query' nor 'plain' statements can alter a role, prepare or deallocate a statement,
//   declare a cursor or listen; only the functions they call could, and those are the
//   application's own (the startup check refuses a role that may create any).
// - 'other': everything else, DO blocks, ALTER, PREPARE, DEALLOCATE, DECLARE, LISTEN, CALL, and
//   anything not recognised. The closing checks for what these can leave, at a higher price.

const ENDING_KEYWORDS = new Set(['commit', 'end', 'abort', 'rollback', 'prepare'])
const QUERY_KEYWORDS = new Set(['select', 'insert', 'update', 'delete', 'merge', 'with', 'values', 'table'])
const PLAIN_KEYWORDS = new Set(['savepoint', 'release', 'rollback', 'fetch', 'move', 'set', 'reset', 'show', 'lock'])
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

/** What kind of statement route code sends (see the top of this module). */
export type RouteStatementKind = 'ends-transaction' | 'query' | 'plain' | 'other'

/** Classifies one route statement by its leading words. */
export function classifyRouteStatement (text: string): RouteStatementKind {
  const [first, second, third] = leadingWords(text, 3)
  if (first === undefined) return 'other'
  if (first === 'rollback') {
    // ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name only undoes a savepoint.
    const next = second !== undefined && OPTIONAL_NOISE.has(second) ? third : second
    return next === 'to' ? 'plain' : 'ends-transaction'
  }
  if (first === 'prepare') return second === 'transaction' ? 'ends-transaction' : 'other'
  if (ENDING_KEYWORDS.has(first)) return 'ends-transaction'
  if (QUERY_KEYWORDS.has(first)) return 'query'
  return PLAIN_KEYWORDS.has(first) ? 'plain' : 'other'
}
