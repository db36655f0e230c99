// drizzle-kit's configuration for the example: `npx drizzle-kit generate --config example-app/drizzle.config.ts`
// (after `npm run build`, which compiles the fastify-tenant-rls/schema helpers the schema imports).
import { defineConfig } from 'drizzle-kit'

export default defineConfig({
  dialect: 'postgresql',
  schema: './example-app/src/schema.ts',
  out: './example-app/drizzle'
})
