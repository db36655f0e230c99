// What counts as "this policy restricts rows to the current tenant": the accepted ways of reading
// the tenant inside a policy, matched against PostgreSQL's own deparsed text of the expression
// (pg_get_expr), so that spelling, case and redundant parentheses in the migration do not matter.
// A new accepted source is one more entry in TENANT_SOURCES; every policy rule reads this module only.
// The signed tenant context's verifying function is matched schema-qualified only: the deparser
// drops the schema when the auditing session's search_path reaches it, and a bare current_tenant()
// could be a look-alike in any schema.
import { SIGNED_CONTEXT_SCHEMA } from '../signed-context/schema-sql.js'

/** One accepted way for a policy to read the current tenant. */
export interface TenantSource {
  /** How the README and the findings name it. */
  name: string
  /** The recommended form; other accepted forms isolate too, and get the `tables.policy-form` warning. */
  preferred: boolean
  /** It reads the tenant through the signed context's verifying function, which route SQL cannot forge. */
  signed: boolean
  /** The deparsed expression, as a regular expression source, for the setting the plugin writes. */
  pattern (setting: string): string
}

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
// A cast the deparser appends, such as ::uuid or ::bigint (none for a text tenant id).
const CAST = '(?:::[a-z ]+)?'

/** The accepted sources, best first. */
export const TENANT_SOURCES: readonly TenantSource[] = [
  {
    // signedCurrentTenantSql's form; the function reads the setting itself, so it takes no argument.
    name: `(select ${SIGNED_CONTEXT_SCHEMA}.current_tenant()::<type>)`,
    preferred: true,
    signed: true,
    pattern: () => `\\( SELECT \\(?${SIGNED_CONTEXT_SCHEMA}\\.current_tenant\\(\\)\\)?${CAST} AS "?\\w+"?\\)`
  },
  {
    // Isolates and cannot be forged, but verifies the signature for every row instead of once.
    name: `${SIGNED_CONTEXT_SCHEMA}.current_tenant() without (select …)`,
    preferred: false,
    signed: true,
    pattern: () => `\\(?${SIGNED_CONTEXT_SCHEMA}\\.current_tenant\\(\\)\\)?${CAST}`
  },
  {
    name: "(select nullif(current_setting('<setting>', true), '')::<type>)",
    preferred: true,
    signed: false,
    pattern: (setting) => `\\( SELECT \\(?NULLIF\\(current_setting\\('${escapeRegExp(setting)}'::text, true\\), ''::text\\)\\)?${CAST} AS "?\\w+"?\\)`
  },
  {
    // Isolates, but re-reads the setting for every row, or turns a reset setting ('') into a cast error.
    name: "current_setting('<setting>') without (select …) or without nullif(…, '')",
    preferred: false,
    signed: false,
    pattern: (setting) => `(?:\\( SELECT )?\\(?(?:NULLIF\\()?current_setting\\('${escapeRegExp(setting)}'::text(?:, (?:true|false))?\\)(?:, ''::text\\))?\\)?${CAST}(?: AS "?\\w+"?\\))?`
  }
]

/** What one policy expression does with the tenant. */
export interface ExpressionVerdict {
  /** The expression compares the tenant column with an accepted source, and nothing OR-ed beside it can widen that. */
  restrictsToTenant: boolean
  /** The accepted source it uses, when it compares at all. */
  source?: TenantSource
  /** The tenant column is cast to text for the comparison. */
  textCast: boolean
}

// Drops parentheses that enclose the whole expression, as the deparser always writes them.
function unwrap (expression: string): string {
  let text = expression.trim()
  while (text.startsWith('(') && closingParenthesis(text, 0) === text.length - 1) text = text.slice(1, -1).trim()
  return text
}

function closingParenthesis (text: string, open: number): number {
  let depth = 0
  let quoted = false
  for (let index = open; index < text.length; index++) {
    const char = text[index]
    if (char === "'") quoted = !quoted
    if (quoted) continue
    if (char === '(') depth++
    if (char === ')' && --depth === 0) return index
  }
  return -1
}

// An OR outside every parenthesis: whatever stands beside the tenant comparison opens the rows.
function hasTopLevelOr (expression: string): boolean {
  const text = unwrap(expression)
  let depth = 0
  let quoted = false
  for (let index = 0; index < text.length; index++) {
    const char = text[index]
    if (char === "'") quoted = !quoted
    if (quoted) continue
    if (char === '(') depth++
    else if (char === ')') depth--
    else if (depth === 0 && text.startsWith(' OR ', index)) return true
  }
  return false
}

/** Judges one deparsed policy expression (USING or WITH CHECK). */
export function judgeExpression (expression: string, setting: string, column: string): ExpressionVerdict {
  const columnPattern = `\\(?"?${escapeRegExp(column)}"?\\)?(?:::(?:text|character varying))?`
  const textCast = new RegExp(`\\("?${escapeRegExp(column)}"?\\)::(?:text|character varying)`).test(expression)
  for (const source of TENANT_SOURCES) {
    const sourcePattern = source.pattern(setting)
    const comparison = new RegExp(`(?:^|[\\s(])${columnPattern} = ${sourcePattern}|${sourcePattern} = ${columnPattern}(?:$|[\\s)])`)
    if (comparison.test(expression)) {
      return { restrictsToTenant: !hasTopLevelOr(expression), source, textCast }
    }
  }
  return { restrictsToTenant: false, textCast }
}
