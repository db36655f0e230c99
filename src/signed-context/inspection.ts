// What the plugin verifies about the database before it runs in signed mode, and the verdicts.
// One catalog query for the facts (is the verifying view there, who owns it, what can the
// application role reach, which policies do not read it), then one live probe: the plugin signs a
// context with each configured key on a real connection and asks the view for it back, and sets a
// context without a signature, which the view must refuse. The probe is what catches what no
// catalog shows: a pooler between the plugin and PostgreSQL (the pid the connection knows is not
// the backend's), a clock too far from the database's, a key that was never installed or was
// already removed, a view replaced by one that verifies nothing. `inspectSignedContext` reports; `checkSignedContext`
// throws the problems and passes the warnings on, like safety-checks.ts.
import type { Pool, PoolClient } from 'pg'
import { UnsafeRoleError } from '../errors.js'
import { backendPidOf } from './backend-pid.js'
import type { ResolvedSignedContext, ResolvedSigningKey } from './options.js'
import { CURRENT_TENANT_VIEW, SIGNED_CONTEXT_SCHEMA, SIGNING_KEYS_TABLE } from './schema-sql.js'
import { SIGNATURE_SETTING, SIGNATURE_VERSION, signTenantContext } from './signer.js'

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

interface SignedContextFacts {
  role: string
  installed: boolean
  readable: boolean
  owner: string | null
  ownerIsSuperuser: boolean
  ownerBypassesRls: boolean
  /** The application role is, or can become, the owner: it could read the keys as the owner. */
  roleIsOwner: boolean
  keysReachable: boolean
  /** Functions of the schema the role may execute (add_key would let it install its own key). */
  otherCallable: string[]
  /** Permissive policies on tables the role may use that do not read the view. */
  unsignedPolicies: string[]
  /** Permissive policies that read the tenant setting themselves (an OR around the view). */
  settingPolicies: string[]
}

// Policies are matched to the view through pg_depend (PostgreSQL records the relations a policy's
// expressions read), so neither a search_path that shortens the deparsed name nor a look-alike
// view in another schema can pass for it. Only permissive policies count: a restrictive one can
// only take rows away.
const FACTS_SQL = `
WITH verifier AS (
  SELECT c.oid, c.relowner
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND c.relname = 'current_tenant' AND c.relkind = 'v'
),
usable AS (
  SELECT pol.oid, pol.polname, pol.polrelid, pol.polqual, pol.polwithcheck FROM pg_catalog.pg_policy pol
  WHERE pol.polpermissive AND pg_catalog.has_table_privilege(pol.polrelid, 'SELECT, INSERT, UPDATE, DELETE')
    -- Only policies that apply to this role (TO PUBLIC, the role, or a role it is a member of):
    -- a policy for another role neither grants nor reads anything for this one.
    AND EXISTS (SELECT FROM pg_catalog.unnest(pol.polroles) AS r(oid) WHERE r.oid = 0 OR pg_catalog.pg_has_role(r.oid, 'MEMBER'))
)
SELECT current_user::text AS role,
  EXISTS (SELECT FROM verifier) AS installed,
  coalesce((SELECT pg_catalog.has_table_privilege(verifier.oid, 'SELECT') FROM verifier), false) AS readable,
  (SELECT o.rolname::text FROM verifier JOIN pg_catalog.pg_roles o ON o.oid = verifier.relowner) AS owner,
  coalesce((SELECT o.rolsuper FROM verifier JOIN pg_catalog.pg_roles o ON o.oid = verifier.relowner), false) AS "ownerIsSuperuser",
  coalesce((SELECT o.rolbypassrls FROM verifier JOIN pg_catalog.pg_roles o ON o.oid = verifier.relowner), false) AS "ownerBypassesRls",
  coalesce((SELECT pg_catalog.pg_has_role(current_user, verifier.relowner, 'MEMBER') FROM verifier), false) AS "roleIsOwner",
  coalesce((SELECT pg_catalog.has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES') OR pg_catalog.has_table_privilege(c.oid, 'DELETE, TRUNCATE, TRIGGER')
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relname = 'signing_keys'), false) AS "keysReachable",
  ARRAY(SELECT p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1 AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE') ORDER BY 1) AS "otherCallable",
  ARRAY(SELECT pg_catalog.format('%s on %s', pg_catalog.quote_ident(u.polname), u.polrelid::pg_catalog.regclass) FROM usable u
        WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_depend d, verifier WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = u.oid
                            AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = verifier.oid) ORDER BY 1) AS "unsignedPolicies",
  ARRAY(SELECT pg_catalog.format('%s on %s', pg_catalog.quote_ident(u.polname), u.polrelid::pg_catalog.regclass) FROM usable u
        WHERE pg_catalog.strpos(pg_catalog.concat_ws(' ', pg_catalog.pg_get_expr(u.polqual, u.polrelid), pg_catalog.pg_get_expr(u.polwithcheck, u.polrelid)), pg_catalog.quote_literal($2)) > 0
        ORDER BY 1) AS "settingPolicies"`

const RERUN = 'run signedContextSql({ role, owner }) (fastify-tenant-rls/schema) as the owner role'

function installationProblems (facts: SignedContextFacts): SignedContextProblem[] {
  const { role, owner } = facts
  if (!facts.installed) return [{ problem: `the view ${CURRENT_TENANT_VIEW} does not exist (or role "${role}" cannot see schema ${SIGNED_CONTEXT_SCHEMA})`, fix: RERUN }]
  const problems: SignedContextProblem[] = []
  const add = (problem: string, fix: string): void => { problems.push({ problem, fix }) }
  const reown = `ALTER VIEW ${CURRENT_TENANT_VIEW} OWNER TO <a role with NOSUPERUSER NOBYPASSRLS>, and the same for schema ${SIGNED_CONTEXT_SCHEMA} and table ${SIGNING_KEYS_TABLE}`
  if (!facts.readable) add(`role "${role}" may not read ${CURRENT_TENANT_VIEW}, so every policy would deny`, `GRANT USAGE ON SCHEMA ${SIGNED_CONTEXT_SCHEMA} TO "${role}"; GRANT SELECT ON ${CURRENT_TENANT_VIEW} TO "${role}"`)
  if (facts.ownerIsSuperuser) add(`${CURRENT_TENANT_VIEW} is owned by the superuser "${owner}" (a migration run as a superuser?): a flaw in it would run with every privilege`, reown)
  if (facts.ownerBypassesRls && !facts.ownerIsSuperuser) add(`${CURRENT_TENANT_VIEW} is owned by "${owner}", which has BYPASSRLS`, reown)
  if (facts.roleIsOwner) add(`role "${role}" is, or is a member of, "${owner}", the owner of ${CURRENT_TENANT_VIEW}: route SQL could read the keys and sign any tenant`, `let a role "${role}" is not a member of own schema ${SIGNED_CONTEXT_SCHEMA}, its table, view and functions`)
  if (facts.keysReachable) add(`role "${role}" holds privileges on ${SIGNING_KEYS_TABLE}: route SQL could read or plant keys`, `REVOKE ALL ON TABLE ${SIGNING_KEYS_TABLE} FROM PUBLIC, "${role}"`)
  if (facts.otherCallable.length > 0) add(`role "${role}" may execute ${facts.otherCallable.join(', ')}: route SQL could install a key of its own`, `REVOKE ALL ON FUNCTION ${facts.otherCallable.join(', ')} FROM PUBLIC, "${role}"`)
  return problems
}

function policyProblems ({ unsignedPolicies, settingPolicies }: SignedContextFacts, setting: string): SignedContextProblem[] {
  const problems: SignedContextProblem[] = []
  if (unsignedPolicies.length > 0) {
    problems.push({
      problem: `the permissive policies ${unsignedPolicies.join(', ')} do not read ${CURRENT_TENANT_VIEW}: route SQL that sets the tenant itself would pass them`,
      fix: `declare the tables with createTenantTable({ ..., signedContext: true }) and migrate, or ALTER POLICY ... USING (tenant_id = (select tenant_id::uuid from ${CURRENT_TENANT_VIEW})) WITH CHECK (the same)`
    })
  }
  if (settingPolicies.length > 0) {
    problems.push({
      problem: `the permissive policies ${settingPolicies.join(', ')} read the setting '${setting}' themselves, which route SQL can write`,
      fix: `let them read the tenant only through ${CURRENT_TENANT_VIEW}`
    })
  }
  return problems
}

// A tenant id no real tenant has: the probe only asks whether the view hands it back.
const PROBE_TENANT = 'fastify-tenant-rls:signed-context-probe'

async function verifiedTenant (client: PoolClient, setting: string, signature: string): Promise<string | null | undefined> {
  await client.query('SELECT set_config($1, $2, true), set_config($3, $4, true)', [setting, PROBE_TENANT, SIGNATURE_SETTING, signature])
  const { rows } = await client.query<{ tenant: string | null }>(`SELECT (SELECT tenant_id FROM ${CURRENT_TENANT_VIEW}) AS tenant`)
  return rows[0]?.tenant
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
  /** The view handed back a tenant whose signature is a forgery: it verifies nothing. */
  acceptsForgery?: boolean
  /** The error the view raised instead of answering (it never should: it denies by no row). */
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
  try {
    for (const key of context.keys) result.verified.push(await verifies(client, key, setting, backendPid, context.ttl))
    const signingKey = context.keys[0] as ResolvedSigningKey
    result.acceptsForgery = await verifiedTenant(client, setting, `${SIGNATURE_VERSION}.${signingKey.id}.${Date.now() + context.ttl}.${'0'.repeat(64)}`) !== null
  } catch (error) {
    const { code, message } = error as { code?: string, message: string }
    result.failure = { code, message }
  } finally {
    await client.query('ROLLBACK')
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
    const fix = result.failure.code === '42501' ? `ALTER VIEW ${CURRENT_TENANT_VIEW} RESET (security_invoker), or ${RERUN}` : RERUN
    problems.push({ problem: `${CURRENT_TENANT_VIEW} raised ${result.failure.code ?? 'an error'} (${result.failure.message}) instead of answering`, fix })
    return { problems, warnings }
  }
  if (result.acceptsForgery === true) {
    problems.push({ problem: `${CURRENT_TENANT_VIEW} hands back a tenant whose signature is a forgery: it verifies nothing (was it replaced?)`, fix: `as the owner, CREATE OR REPLACE VIEW ${CURRENT_TENANT_VIEW} with the definition signedContextSql writes (fastify-tenant-rls/schema)` })
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
  const client = await pool.connect()
  let failed: Error | undefined
  try {
    const { rows: [facts] } = await client.query<SignedContextFacts>(FACTS_SQL, [SIGNED_CONTEXT_SCHEMA, setting])
    if (facts === undefined) throw new Error('the signed context inspection returned no row')
    const problems = [...installationProblems(facts), ...policyProblems(facts, setting)]
    // The probe needs a view it may read; without one the problems above already say why.
    if (!facts.installed || !facts.readable) return { problems, warnings: [] }
    const verdicts = probeVerdicts(await probe(client, context, setting), context)
    return { problems: [...problems, ...verdicts.problems], warnings: verdicts.warnings }
  } catch (error) {
    failed = error as Error
    throw error
  } finally {
    // A connection whose probe failed half-way may still be in a transaction: it is not pooled again.
    client.release(failed)
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
