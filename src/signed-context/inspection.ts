// What the plugin verifies about the database before it runs in signed mode, and the verdicts.
// One catalog query for the facts (are the function the policies call and the view it reads there,
// who owns them, what can the application role reach, which policies do not call the function),
// then one live probe: the plugin signs a context with each configured key on a real connection and
// asks the function for it back, and sets a context with a forged signature, which it must refuse. The probe is what catches what no
// catalog shows: a pooler between the plugin and PostgreSQL (the pid the connection knows is not
// the backend's), a clock too far from the database's, a key that was never installed or was
// already removed, a view replaced by one that verifies nothing. `inspectSignedContext` reports; `checkSignedContext`
// throws the problems and passes the warnings on, like safety-checks.ts.
import type { ClientBase, Pool, PoolClient } from 'pg'
import { UnsafeRoleError } from '../errors.js'
import { backendPidOf } from './backend-pid.js'
import type { ResolvedSignedContext, ResolvedSigningKey } from './options.js'
import { CURRENT_TENANT_FUNCTION, SIGNED_CONTEXT_SCHEMA, SIGNING_KEYS_TABLE, VERIFIED_TENANT_VIEW } from './schema-sql.js'
import { SIGNATURE_SETTING, SIGNATURE_VERSION, signTenantContext } from './signer.js'
import { connectHeld, releaseHeld } from '../held-client.js'

/** One thing wrong with the signed mode's database side, with the fix. */
export interface SignedContextProblem {
  problem: string
  fix: string
}

/** What `inspectSignedContext` found: problems (the startup check refuses) and warnings. */
export interface SignedContextInspection {
  problems: SignedContextProblem[]
  warnings: SignedContextProblem[]
}

/** Who owns one of the verifier's objects, and what that means for the application role. */
interface Ownership {
  /** 'function' (current_tenant()) or 'view' (verified_tenant). */
  object: 'function' | 'view'
  owner: string
  superuser: boolean
  bypassRls: boolean
  /** The application role is, or can become, the owner: it could replace the object, or read the keys. */
  roleIsOwner: boolean
}

interface SignedContextFacts {
  role: string
  installed: boolean
  viewInstalled: boolean
  callable: boolean
  readable: boolean
  owners: Ownership[]
  keysReachable: boolean
  /** Other functions of the schema the role may execute (add_key would let it install its own key). */
  otherCallable: string[]
  /** Permissive policies on tables the role may use that do not call current_tenant(). */
  unsignedPolicies: string[]
  /** Permissive policies that read the tenant setting themselves (an OR around the function). */
  settingPolicies: string[]
}

// Policies are matched to the function through pg_depend (PostgreSQL records the functions a
// policy's expressions call), so neither a search_path that shortens the deparsed name nor a
// look-alike function in another schema can pass for it. Only permissive policies count: a
// restrictive one can only take rows away.
const FACTS_SQL = `
WITH fn AS (
  SELECT p.oid, p.proowner AS owner
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = $1 AND p.proname = 'current_tenant' AND p.pronargs = 0
),
verifier AS (
  SELECT c.oid, c.relowner AS owner
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND c.relname = 'verified_tenant' AND c.relkind = 'v'
),
usable AS (
  SELECT pol.oid, pol.polname, pol.polrelid, pol.polqual, pol.polwithcheck FROM pg_catalog.pg_policy pol
  WHERE pol.polpermissive AND pg_catalog.has_table_privilege(pol.polrelid, 'SELECT, INSERT, UPDATE, DELETE')
    -- Only policies that apply to this role (TO PUBLIC, the role, or a role it is a member of):
    -- a policy for another role neither grants nor reads anything for this one.
    AND EXISTS (SELECT FROM pg_catalog.unnest(pol.polroles) AS r(oid) WHERE r.oid = 0 OR pg_catalog.pg_has_role(r.oid, 'MEMBER'))
)
SELECT current_user::text AS role,
  EXISTS (SELECT FROM fn) AS installed,
  EXISTS (SELECT FROM verifier) AS "viewInstalled",
  coalesce((SELECT pg_catalog.has_function_privilege(fn.oid, 'EXECUTE') FROM fn), false) AS callable,
  coalesce((SELECT pg_catalog.has_table_privilege(verifier.oid, 'SELECT') FROM verifier), false) AS readable,
  coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object('object', o.object, 'owner', r.rolname, 'superuser', r.rolsuper,
              'bypassRls', r.rolbypassrls, 'roleIsOwner', pg_catalog.pg_has_role(current_user, o.owner, 'MEMBER')) ORDER BY o.object)
            FROM (SELECT 'function' AS object, owner FROM fn UNION ALL SELECT 'view', owner FROM verifier) o
            JOIN pg_catalog.pg_roles r ON r.oid = o.owner), '[]') AS owners,
  coalesce((SELECT pg_catalog.has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES') OR pg_catalog.has_table_privilege(c.oid, 'DELETE, TRUNCATE, TRIGGER')
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relname = 'signing_keys'), false) AS "keysReachable",
  ARRAY(SELECT p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1 AND p.oid NOT IN (SELECT oid FROM fn) AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE') ORDER BY 1) AS "otherCallable",
  ARRAY(SELECT pg_catalog.format('%s on %s', pg_catalog.quote_ident(u.polname), u.polrelid::pg_catalog.regclass) FROM usable u
        WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_depend d, fn WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = u.oid
                            AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid = fn.oid) ORDER BY 1) AS "unsignedPolicies",
  ARRAY(SELECT pg_catalog.format('%s on %s', pg_catalog.quote_ident(u.polname), u.polrelid::pg_catalog.regclass) FROM usable u
        WHERE pg_catalog.strpos(pg_catalog.concat_ws(' ', pg_catalog.pg_get_expr(u.polqual, u.polrelid), pg_catalog.pg_get_expr(u.polwithcheck, u.polrelid)), pg_catalog.quote_literal($2)) > 0
        ORDER BY 1) AS "settingPolicies"`

const RERUN = 'run signedContextSql({ role, owner }) (fastify-tenant-rls/schema) as the owner role'

const OBJECTS = {
  function: { name: CURRENT_TENANT_FUNCTION, alter: `ALTER FUNCTION ${CURRENT_TENANT_FUNCTION}` },
  view: { name: VERIFIED_TENANT_VIEW, alter: `ALTER VIEW ${VERIFIED_TENANT_VIEW}` }
} as const

function installationProblems (facts: SignedContextFacts): SignedContextProblem[] {
  const { role } = facts
  const missing = [...(facts.installed ? [] : [CURRENT_TENANT_FUNCTION]), ...(facts.viewInstalled ? [] : [VERIFIED_TENANT_VIEW])]
  if (missing.length > 0) return [{ problem: `${missing.join(' and ')} ${missing.length > 1 ? 'do' : 'does'} not exist (or role "${role}" cannot see schema ${SIGNED_CONTEXT_SCHEMA})`, fix: RERUN }]
  const problems: SignedContextProblem[] = []
  const add = (problem: string, fix: string): void => { problems.push({ problem, fix }) }
  if (!facts.callable) add(`role "${role}" may not execute ${CURRENT_TENANT_FUNCTION}, so every policy would deny`, `GRANT USAGE ON SCHEMA ${SIGNED_CONTEXT_SCHEMA} TO "${role}"; GRANT EXECUTE ON FUNCTION ${CURRENT_TENANT_FUNCTION} TO "${role}"`)
  if (!facts.readable) add(`role "${role}" may not read ${VERIFIED_TENANT_VIEW}, which ${CURRENT_TENANT_FUNCTION} reads with its caller's rights, so every policy would deny`, `GRANT SELECT ON ${VERIFIED_TENANT_VIEW} TO "${role}"`)
  for (const { object, owner, superuser, bypassRls, roleIsOwner } of facts.owners) {
    const { name, alter } = OBJECTS[object]
    const reown = `${alter} OWNER TO <a role with NOSUPERUSER NOBYPASSRLS>, and the same for the schema ${SIGNED_CONTEXT_SCHEMA}, its table, view and functions`
    if (superuser) add(`${name} is owned by the superuser "${owner}" (a migration run as a superuser?): a flaw in it would run with every privilege`, reown)
    else if (bypassRls) add(`${name} is owned by "${owner}", which has BYPASSRLS`, reown)
    if (roleIsOwner) add(`role "${role}" is, or is a member of, "${owner}", the owner of ${name}: route SQL could replace it or read the keys, and sign any tenant`, `let a role "${role}" is not a member of own schema ${SIGNED_CONTEXT_SCHEMA}, its table, view and functions`)
  }
  if (facts.keysReachable) add(`role "${role}" holds privileges on ${SIGNING_KEYS_TABLE}: route SQL could read or plant keys`, `REVOKE ALL ON TABLE ${SIGNING_KEYS_TABLE} FROM PUBLIC, "${role}"`)
  if (facts.otherCallable.length > 0) add(`role "${role}" may execute ${facts.otherCallable.join(', ')}: route SQL could install a key of its own`, `REVOKE ALL ON FUNCTION ${facts.otherCallable.join(', ')} FROM PUBLIC, "${role}"`)
  return problems
}

function policyProblems ({ unsignedPolicies, settingPolicies }: SignedContextFacts, setting: string): SignedContextProblem[] {
  const problems: SignedContextProblem[] = []
  if (unsignedPolicies.length > 0) {
    problems.push({
      problem: `the permissive policies ${unsignedPolicies.join(', ')} do not call ${CURRENT_TENANT_FUNCTION}: route SQL that sets the tenant itself would pass them`,
      fix: `declare the tables with createTenantTable({ ..., signedContext: true }) and migrate, or ALTER POLICY ... USING (tenant_id = (select ${CURRENT_TENANT_FUNCTION}::uuid)) WITH CHECK (the same)`
    })
  }
  if (settingPolicies.length > 0) {
    problems.push({
      problem: `the permissive policies ${settingPolicies.join(', ')} read the setting '${setting}' themselves, which route SQL can write`,
      fix: `let them read the tenant only through ${CURRENT_TENANT_FUNCTION}`
    })
  }
  return problems
}

// A tenant id no real tenant has: the probe only asks whether the function hands it back.
const PROBE_TENANT = 'fastify-tenant-rls:signed-context-probe'

/** The tenant the verifying function hands back in the current transaction of `client` (null: no signature verifies). */
export async function verifiedTenantOf (client: ClientBase): Promise<string | null | undefined> {
  const { rows } = await client.query<{ tenant: string | null }>(`SELECT ${CURRENT_TENANT_FUNCTION} AS tenant`)
  return rows[0]?.tenant
}

async function verifiedTenant (client: PoolClient, setting: string, signature: string): Promise<string | null | undefined> {
  await client.query('SELECT set_config($1, $2, true), set_config($3, $4, true)', [setting, PROBE_TENANT, SIGNATURE_SETTING, signature])
  return await verifiedTenantOf(client)
}

async function verifies (client: PoolClient, key: ResolvedSigningKey, setting: string, backendPid: number, ttl: number): Promise<boolean> {
  const signature = signTenantContext({ key, tenantId: PROBE_TENANT, backendPid, expiresAt: Date.now() + ttl })
  return await verifiedTenant(client, setting, signature.value) === PROBE_TENANT
}

interface ProbeResult {
  backendPid: number
  knownPid: number | undefined
  skewMs: number
  verified: boolean[]
  /** The function handed back a tenant whose signature is a forgery: it verifies nothing. */
  acceptsForgery?: boolean
  /** The error the function raised instead of answering (it never should: it denies by NULL). */
  failure?: { code: string | undefined, message: string }
}

// The clock is read between two readings of this process's clock: the skew is the database's
// reading minus their midpoint, good to within half the round trip.
async function probe (client: PoolClient, context: ResolvedSignedContext, setting: string): Promise<ProbeResult> {
  const before = Date.now()
  const { rows: [clock] } = await client.query<{ pid: number, now: number }>('SELECT pg_backend_pid() AS pid, (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now')
  const after = Date.now()
  const backendPid = clock?.pid ?? 0
  const result: ProbeResult = { backendPid, knownPid: backendPidOf(client), skewMs: Math.round((clock?.now ?? 0) - (before + after) / 2), verified: [] }
  if (result.knownPid !== backendPid) return result
  await client.query('BEGIN')
  let failure: unknown
  try {
    for (const key of context.keys) result.verified.push(await verifies(client, key, setting, backendPid, context.ttl))
    const signingKey = context.keys[0] as ResolvedSigningKey
    result.acceptsForgery = await verifiedTenant(client, setting, `${SIGNATURE_VERSION}.${signingKey.id}.${Date.now() + context.ttl}.${'0'.repeat(64)}`) !== null
  } catch (error) {
    failure = error
    const { code, message } = error as { code?: string, message: string }
    result.failure = { code, message }
  } finally {
    // A ROLLBACK that fails (the connection died with the probe) ends the inspection with the
    // probe's own error, the one that says what happened.
    await client.query('ROLLBACK').catch((rollbackError: unknown) => { throw failure ?? rollbackError })
  }
  return result
}

function probeVerdicts (result: ProbeResult, context: ResolvedSignedContext): SignedContextInspection {
  const problems: SignedContextProblem[] = []
  const warnings: SignedContextProblem[] = []
  if (result.knownPid !== result.backendPid) {
    problems.push({
      problem: `the connection reports ${result.knownPid === undefined ? 'no valid backend pid' : `backend pid ${result.knownPid}`} but runs on backend ${result.backendPid}: a pooler (PgBouncer) sits in between, and a signature bound to a pid the plugin cannot know never verifies`,
      fix: 'connect the plugin\'s pool to PostgreSQL directly, or leave signedContext off behind a pooler'
    })
    return { problems, warnings }
  }
  if (result.failure !== undefined) {
    // 42501: the view reads the keys with the reader's rights (security_invoker), which it may not.
    const fix = result.failure.code === '42501' ? `ALTER VIEW ${VERIFIED_TENANT_VIEW} RESET (security_invoker), or ${RERUN}` : RERUN
    problems.push({ problem: `${CURRENT_TENANT_FUNCTION} raised ${result.failure.code ?? 'an error'} (${result.failure.message}) instead of answering`, fix })
    return { problems, warnings }
  }
  if (result.acceptsForgery === true) {
    problems.push({ problem: `${CURRENT_TENANT_FUNCTION} hands back a tenant whose signature is a forgery: it verifies nothing (was it or ${VERIFIED_TENANT_VIEW} replaced?)`, fix: 'as the owner, CREATE OR REPLACE both with the definitions signedContextSql writes (fastify-tenant-rls/schema)' })
  }
  if (Math.abs(result.skewMs) * 2 > context.ttl) {
    problems.push({
      problem: `this process's clock is ${Math.abs(result.skewMs)} ms ${result.skewMs > 0 ? 'behind' : 'ahead of'} the database's, more than half the signature ttl (${context.ttl} ms): signatures would expire before use, or live longer than meant`,
      fix: 'synchronise both clocks (NTP), or raise signedContext.ttl'
    })
  }
  context.keys.forEach((key, index) => {
    if (result.verified[index] === true) return
    if (index === 0) {
      problems.push({ problem: `the database does not accept signatures made with the signing key "${key.id}": every tenant query would see no rows`, fix: `install it as the owner role: installSigningKey(ownerPool, { id: '${key.id}', secret }) (fastify-tenant-rls/schema)` })
    } else {
      warnings.push({ problem: `the database no longer accepts the key "${key.id}"`, fix: `remove "${key.id}" from signedContext.keys` })
    }
  })
  return { problems, warnings }
}

/** Inspects the signed mode's database side through `pool` (the application role's pool) for `setting`. */
export async function inspectSignedContext (pool: Pool, context: ResolvedSignedContext, setting: string): Promise<SignedContextInspection> {
  const client = await connectHeld(pool)
  let failed: Error | undefined
  try {
    const { rows: [facts] } = await client.query<SignedContextFacts>(FACTS_SQL, [SIGNED_CONTEXT_SCHEMA, setting])
    if (facts === undefined) throw new Error('the signed context inspection returned no row')
    const problems = [...installationProblems(facts), ...policyProblems(facts, setting)]
    // The probe needs a function it may call; without one the problems above already say why.
    if (!facts.installed || !facts.viewInstalled || !facts.callable || !facts.readable) return { problems, warnings: [] }
    const verdicts = probeVerdicts(await probe(client, context, setting), context)
    return { problems: [...problems, ...verdicts.problems], warnings: verdicts.warnings }
  } catch (error) {
    failed = error as Error
    throw error
  } finally {
    // A connection whose probe failed half-way may still be in a transaction: it is not pooled again.
    releaseHeld(client, failed)
  }
}

/** One finding as a sentence: what is wrong, then the fix. */
export function describeSignedContextProblem ({ problem, fix }: SignedContextProblem): string {
  return `signed tenant context: ${problem}; fix: ${fix}`
}

/** Refuses (UnsafeRoleError, with the fixes) a database signed mode cannot trust; hands each warning to `onWarning`. */
export async function checkSignedContext (pool: Pool, context: ResolvedSignedContext, setting: string, onWarning: (warning: SignedContextProblem) => void): Promise<void> {
  const { problems, warnings } = await inspectSignedContext(pool, context, setting)
  if (problems.length > 0) throw new UnsafeRoleError(problems.map(describeSignedContextProblem).join('; '))
  for (const warning of warnings) onWarning(warning)
}
