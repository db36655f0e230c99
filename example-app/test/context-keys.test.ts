// Where the example's signing key comes from: TENANT_CONTEXT_KEY (and its id), or, unset or empty,
// the development key, flagged so the server can say so. A key too short is left to the plugin,
// which refuses it at register time.
import t from 'tap'
import { contextKeysFrom, DEVELOPMENT_CONTEXT_KEY } from '../src/context-keys.js'

t.test('unset or empty: the development key, flagged', async (t) => {
  t.same(contextKeysFrom({}), { keys: [DEVELOPMENT_CONTEXT_KEY], development: true })
  t.same(contextKeysFrom({ TENANT_CONTEXT_KEY: '', TENANT_CONTEXT_KEY_ID: 'x' }), { keys: [DEVELOPMENT_CONTEXT_KEY], development: true })
})

t.test('set: that secret, under TENANT_CONTEXT_KEY_ID or "primary"', async (t) => {
  const secret = 'a'.repeat(48)
  t.same(contextKeysFrom({ TENANT_CONTEXT_KEY: secret }), { keys: [{ id: 'primary', secret }], development: false })
  t.same(contextKeysFrom({ TENANT_CONTEXT_KEY: secret, TENANT_CONTEXT_KEY_ID: '2026-11' }), { keys: [{ id: '2026-11', secret }], development: false })
})
