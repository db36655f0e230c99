// The signed tenant context on the command line, for every subcommand that opens a tenant context
// (export, import, erase, move, explain): --signing-key-id names the key, its secret comes from the
// environment, and one without the other is a usage error.
import { validateSignedContext } from '../signed-context/options.js'
import type { SignedContextOptions } from '../signed-context/options.js'
import { UsageError } from './command.js'

/**
 * Where the signing key's secret comes from in signed mode: an environment variable, never an
 * argument, which any user of the machine could read in the process list.
 */
export const SIGNING_KEY_ENV = 'TENANT_RLS_SIGNING_KEY'

/** The option naming the key that signs the command's tenant context, in signed mode. */
export const SIGNING_OPTION = { 'signing-key-id': { type: 'string' } } as const

/** The signing option's lines in a subcommand's --help; `withoutIt` says what the command does unsigned on a signed table. */
export function signingHelp (withoutIt: string): string {
  return `  --signing-key-id <id>     signed mode: sign the tenant context with key <id>, its secret read
                            from ${SIGNING_KEY_ENV}; ${withoutIt}`
}

// Both or neither: a secret without its id, or an id without its secret, would run the command
// unsigned, and an unsigned export of signed tables is an empty file that looks like a success.
/** The `signedContext` the command runs with: from --signing-key-id and the secret in `env`, or none. */
export function signedContextFrom (values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): SignedContextOptions | undefined {
  const id = values['signing-key-id']
  const secret = env[SIGNING_KEY_ENV]
  const hasSecret = secret !== undefined && secret !== ''
  if (typeof id !== 'string') {
    if (hasSecret) throw new UsageError(`${SIGNING_KEY_ENV} is set: give --signing-key-id <id> to sign with it`)
    return undefined
  }
  if (!hasSecret) throw new UsageError(`--signing-key-id ${id} needs the key's secret in ${SIGNING_KEY_ENV} (never on the command line, where the process list shows it)`)
  const signedContext = { keys: [{ id, secret }] }
  try {
    validateSignedContext(signedContext)
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  return signedContext
}
