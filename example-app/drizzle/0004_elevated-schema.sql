-- The schema of the elevated-access tables (the audit trail and the support grants, next two
-- migrations), apart from the tenant tables in public: auditDatabase and the tenant lifecycle
-- (export, erase) take every table of public with a tenant_id column for a tenant table, and would
-- flag these, copy the trail into a tenant's export, or fail to erase a tenant from an append-only table.
CREATE SCHEMA elevated;
--> statement-breakpoint
REVOKE ALL ON SCHEMA elevated FROM PUBLIC;
--> statement-breakpoint
GRANT USAGE ON SCHEMA elevated TO example_app, example_system;
