-- tenantTablesSql (fastify-tenant-rls/schema): FORCE ROW LEVEL SECURITY and grants for example_app
ALTER TABLE "projects" FORCE ROW LEVEL SECURITY;
--> statement-breakpoint
REVOKE ALL ON TABLE "projects" FROM "example_app";
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "projects" TO "example_app";
--> statement-breakpoint
ALTER TABLE "tasks" FORCE ROW LEVEL SECURITY;
--> statement-breakpoint
REVOKE ALL ON TABLE "tasks" FROM "example_app";
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "tasks" TO "example_app";
