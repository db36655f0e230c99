// The `openWith: 'set-local'` option, for Citus: the tenant transaction sets the tenant with
// `SET LOCAL <setting> TO '<tenant id>'` instead of `set_config(...)`, because Citus sends SET LOCAL
// commands on to the worker connections of the transaction (with citus.propagate_set_commands =
// 'local', which the opening sets too) and a function call it never sees. This module checks the
// option against the others at register time and builds the two statements; tenant-transaction.ts
// sends them, unnamed, in the opening that rides with the first query.
//
// SET takes no bind parameters, so this is the one place a tenant id is written into SQL text. It is
// written only after it has been checked again here against its type's one canonical spelling
// (tenant-id.ts: ASCII letters, digits and hyphens, nothing else), so there is nothing in it to
// quote and nothing a client encoding could reinterpret; anything else is refused before a byte is sent.
// The check matters beyond this connection: Citus forwards the statement's text to its workers, and
// replays the transaction's SET LOCAL texts, joined with ';', on worker connections it opens later.
import { InvalidOptionError, TenantInvalidError, failOption } from '../errors.js'
import type { PipelinedStatement } from '../opening-query.js'
import { normalizeTenantId } from '../tenant-id.js'
import type { TenantIdType } from '../tenant-id.js'

/** How the opening sets the tenant: `set_config($1, $2, true)` with bound parameters (the default), or `SET LOCAL` (Citus). */
export type OpenWith = 'set-config' | 'set-local'

// Every character a canonical tenant id of any type can hold. Checked on top of the type's own rule
// so that a future, looser id type fails closed here instead of reaching the statement text.
const LITERAL_SAFE = /^[0-9a-z-]{1,63}$/

// Transaction-local like the tenant, and set first: Citus records a SET LOCAL for the workers only
// while this is 'local' (its default is 'none'). On PostgreSQL without Citus it is a placeholder
// setting that nothing reads. Set here rather than asked of the operator: the startup check refuses
// a setting stored for the app role (stored-settings.ts), and a missing one would leave the workers
// without a tenant, so every policy there would deny everything, silently.
const PROPAGATE_SET_COMMANDS: PipelinedStatement = { text: "SET LOCAL citus.propagate_set_commands TO 'local'" }

/**
 * Checks the `openWith` option against the other options. `given` is what the caller passed for
 * each; `where` prefixes the messages (`withTenant options: `).
 */
export function validateOpenWith (given: { openWith?: unknown, singleRoundTrip?: unknown, signedContext?: unknown, settings?: unknown }, where = ''): OpenWith {
  const { openWith = 'set-config' } = given
  if (openWith !== 'set-config' && openWith !== 'set-local') failOption(`${where}openWith must be 'set-config' or 'set-local', got ${JSON.stringify(openWith)}`)
  if (openWith === 'set-config') return openWith
  if (given.singleRoundTrip !== undefined && given.singleRoundTrip !== false) {
    failOption(`${where}openWith 'set-local' cannot be combined with singleRoundTrip: SET LOCAL needs the transaction block BEGIN opens, which a single-round-trip query does not have`)
  }
  if (given.signedContext !== undefined) {
    failOption(`${where}openWith 'set-local' cannot be combined with signedContext: the signature is bound to the backend pid of the connection it is made on, and a Citus worker runs the query on a backend with another pid, so the policies there would deny every row`)
  }
  if (given.settings !== undefined) {
    failOption(`${where}openWith 'set-local' cannot be combined with settings: extra settings are set with set_config, which Citus does not send to its workers, so a policy reading them there would see nothing`)
  }
  return openWith
}

/** Refuses a route that asks for singleRoundTrip when the plugin opens with SET LOCAL (see validateOpenWith). */
export function refuseSingleRoundTripRoute (openWith: OpenWith, singleRoundTrip: unknown, route: string): void {
  if (openWith === 'set-local' && singleRoundTrip !== false) {
    throw new InvalidOptionError(`route ${route}: singleRoundTrip cannot be used with openWith 'set-local' (SET LOCAL needs the transaction block BEGIN opens)`)
  }
}

/** The setting name as a SQL name, each part quoted: `app.user` is a valid setting, but `user` is a reserved word. */
function quotedSetting (setting: string): string {
  return setting.split('.').map((part) => `"${part}"`).join('.')
}

/**
 * The statements that set the tenant with SET LOCAL, to send right after BEGIN. `setting` must be
 * validated (options.ts SETTING_NAME). The tenant statement is marked unnamed: its text differs per
 * tenant, and a prepared name for each would grow every connection's statements without bound.
 * Throws FST_TENANT_RLS_TENANT_INVALID, before anything is sent, for an id that is not canonical.
 */
export function setLocalStatements (setting: string, tenantId: string, tenantIdType: TenantIdType): PipelinedStatement[] {
  if (normalizeTenantId(tenantId, tenantIdType) !== tenantId || !LITERAL_SAFE.test(tenantId)) throw new TenantInvalidError()
  return [PROPAGATE_SET_COMMANDS, { text: `SET LOCAL ${quotedSetting(setting)} TO '${tenantId}'`, unnamed: true }]
}
