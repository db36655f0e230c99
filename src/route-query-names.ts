// Route queries as prepared statements, without `.prepare()`: each distinct query text gets a name
// on the connection that runs it, so PostgreSQL parses and analyses it once per connection and can
// reuse its plan, instead of doing all of that on every request. pg itself then sends the Parse
// only the first time (it remembers which names a connection has parsed).
// The names live per connection, in a least-recently-used list of bounded size: an application that
// builds many distinct texts (IN lists of every length, generated reports) must not grow every
// server connection's memory without end. The statement a new text evicts is closed in the same
// message, just in front of the new text's Parse (opening-query.ts), on a connection that runs one
// query at a time: no query in flight can be using it.
// What is not named: statements other than queries (route-statement.ts: nothing to plan), texts a
// route already named (`.prepare('name')`), and texts too long to be worth keeping.

/** Texts longer than this stay unnamed: generated bulk statements rarely repeat and would only evict others. */
export const LONGEST_NAMED_TEXT = 8192

/** Default size of each connection's list of route query names. */
export const DEFAULT_PREPARED_ROUTE_QUERIES = 100

// The prefix sets them apart from the plugin's own statements and from names routes choose.
const NAME_PREFIX = 'fastify_tenant_rls_q'

/** One connection's names, oldest use first (a Map keeps insertion order; a use re-inserts). */
interface ConnectionNames {
  byText: Map<string, string>
  /** Names are never reused on a connection, so a closed name can never be mistaken for a live one. */
  issued: number
}

const namesOf = new WeakMap<object, ConnectionNames>()

/** The name to run `text` under on `connection`, and the name to close first to make room, if any. */
export interface RouteQueryName {
  name: string
  evicted: string | undefined
}

/**
 * Names `text` on `connection` (any object that lives as long as the server connection), keeping at
 * most `capacity` names per connection. Returns undefined when the text stays unnamed.
 */
export function nameRouteQuery (connection: object, text: string, capacity: number): RouteQueryName | undefined {
  if (capacity <= 0 || text.length > LONGEST_NAMED_TEXT) return undefined
  let names = namesOf.get(connection)
  if (names === undefined) {
    names = { byText: new Map(), issued: 0 }
    namesOf.set(connection, names)
  }
  const known = names.byText.get(text)
  if (known !== undefined) {
    names.byText.delete(text)
    names.byText.set(text, known)
    return { name: known, evicted: undefined }
  }
  let evicted: string | undefined
  if (names.byText.size >= capacity) {
    const [oldestText, oldestName] = names.byText.entries().next().value as [string, string]
    names.byText.delete(oldestText)
    evicted = oldestName
  }
  names.issued += 1
  const name = `${NAME_PREFIX}${names.issued}`
  names.byText.set(text, name)
  return { name, evicted }
}
