// Who does an elevated thing and why: checked before any connection is taken, so an unaccountable
// call leaves no trace because it never happened. The bounds keep the audit trail readable and
// cheap (a job cannot pour a megabyte into every row) and refuse what would make two names look
// alike in a report: surrounding spaces and control characters.
import { AccountabilityRequiredError } from '../errors.js'

/** The longest actor, operator, approver or reviewer name. */
export const MAX_ACTOR_LENGTH = 200
/** The longest reason. */
export const MAX_REASON_LENGTH = 1000

/** Who runs an elevated piece of work and why; both go into the audit trail. */
export interface Accountability {
  /** Who or what acts, e.g. `'job:reconcile'` or `'support:alice@example.com'`. 1 to 200 characters. */
  actor: string
  /** Why, in words a compliance reviewer can follow, e.g. `'nightly invoice reconciliation'`. 1 to 1000 characters. */
  reason: string
}

// C0 and C1 control characters, and the line and paragraph separators: nothing that can forge a line of a report.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/

/** Returns `value` when it is a non-empty trimmed string of at most `max` characters without control characters; throws otherwise. */
export function accountableText (what: string, value: unknown, max: number, example: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new AccountabilityRequiredError(`${what} is required: a non-empty string such as ${JSON.stringify(example)}`)
  }
  // The length first: a hostile megabyte costs nothing more.
  if (value.length > max) throw new AccountabilityRequiredError(`${what} is ${value.length} characters long; at most ${max} are kept`)
  if (value.trim() !== value || CONTROL.test(value)) {
    throw new AccountabilityRequiredError(`${what} must not start or end with spaces or contain control characters, got ${JSON.stringify(value)}`)
  }
  return value
}

/** Checks `{ actor, reason }` of a system job. */
export function checkAccountability (given: unknown): Accountability {
  if (given === null || typeof given !== 'object') {
    throw new AccountabilityRequiredError("pass { actor, reason }, e.g. { actor: 'job:reconcile', reason: 'nightly invoice reconciliation' }")
  }
  const { actor, reason } = given as Record<string, unknown>
  return {
    actor: accountableText('actor', actor, MAX_ACTOR_LENGTH, 'job:reconcile'),
    reason: accountableText('reason', reason, MAX_REASON_LENGTH, 'nightly invoice reconciliation')
  }
}
