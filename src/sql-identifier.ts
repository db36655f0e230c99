// Quoting an identifier for SQL text: the one place the package writes a name (role, schema,
// table, column) into a statement, where PostgreSQL takes no parameter for it. Double quotes keep
// the name as given (case, dots, spaces) and doubling an inner quote keeps it from ending early.
// Plain TypeScript rather than pg's escapeIdentifier, so the schema helpers need no pg at runtime.

/** `name` as a quoted SQL identifier. */
export function quoteIdentifier (name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}
