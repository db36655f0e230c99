-- grantsTableSql (fastify-tenant-rls/elevated): the support grants elevated.grants, run as its owner
CREATE TABLE "elevated"."grants" (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id text NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 64),
  operator text NOT NULL CHECK (length(operator) BETWEEN 1 AND 200),
  approver text CHECK (length(approver) BETWEEN 1 AND 200),
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
  write boolean NOT NULL DEFAULT false,
  break_glass boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT statement_timestamp(),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  revoked_by text CHECK (length(revoked_by) BETWEEN 1 AND 200),
  reviewed_at timestamptz,
  reviewed_by text CHECK (length(reviewed_by) BETWEEN 1 AND 200),
  CONSTRAINT "grants_expiry" CHECK (expires_at > created_at),
  CONSTRAINT "grants_approval" CHECK (break_glass = (approver IS NULL)),
  CONSTRAINT "grants_four_eyes" CHECK (lower(approver) <> lower(operator)),
  CONSTRAINT "grants_revocation" CHECK ((revoked_at IS NULL) = (revoked_by IS NULL)),
  CONSTRAINT "grants_review" CHECK ((reviewed_at IS NULL) = (reviewed_by IS NULL) AND (reviewed_at IS NULL OR break_glass) AND lower(reviewed_by) <> lower(operator))
);
--> statement-breakpoint
CREATE INDEX "grants_admission_idx" ON "elevated"."grants" (tenant_id, operator, expires_at) WHERE revoked_at IS NULL;
--> statement-breakpoint
CREATE FUNCTION "elevated"."grants_final" () RETURNS trigger LANGUAGE plpgsql
  SET search_path TO pg_catalog, pg_temp
  AS $$
BEGIN
  IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at, NEW.revoked_by) IS DISTINCT FROM (OLD.revoked_at, OLD.revoked_by) THEN
    RAISE EXCEPTION 'fastify-tenant-rls: grant % is already revoked', OLD.id USING ERRCODE = '42501';
  END IF;
  IF OLD.reviewed_at IS NOT NULL AND (NEW.reviewed_at, NEW.reviewed_by) IS DISTINCT FROM (OLD.reviewed_at, OLD.reviewed_by) THEN
    RAISE EXCEPTION 'fastify-tenant-rls: grant % is already reviewed', OLD.id USING ERRCODE = '42501';
  END IF;
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "grants_final" BEFORE UPDATE ON "elevated"."grants" FOR EACH ROW EXECUTE FUNCTION "elevated"."grants_final"();
--> statement-breakpoint
ALTER TABLE "elevated"."grants" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
ALTER TABLE "elevated"."grants" FORCE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY "grants_tenant_read" ON "elevated"."grants" FOR SELECT TO "example_app" USING (tenant_id = (SELECT tenant_rls.current_tenant()));
--> statement-breakpoint
COMMENT ON TABLE "elevated"."grants" IS 'fastify-tenant-rls library table, not a tenant table: support access grants';
--> statement-breakpoint
REVOKE ALL ON TABLE "elevated"."grants" FROM PUBLIC;
--> statement-breakpoint
GRANT SELECT ON TABLE "elevated"."grants" TO "example_app";
--> statement-breakpoint
GRANT SELECT, INSERT (tenant_id, operator, approver, reason, write, break_glass, expires_at) ON TABLE "elevated"."grants" TO "example_system";
--> statement-breakpoint
GRANT UPDATE (revoked_at, revoked_by, reviewed_at, reviewed_by) ON TABLE "elevated"."grants" TO "example_system";
