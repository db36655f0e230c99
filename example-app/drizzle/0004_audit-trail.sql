-- auditTrailSql (fastify-tenant-rls/elevated): the audit trail public.tenant_rls_audit, run as its owner
CREATE SEQUENCE "public"."tenant_rls_audit_seq" AS bigint;
--> statement-breakpoint
CREATE TABLE "public"."tenant_rls_audit" (
  seq bigint PRIMARY KEY,
  occurred_at timestamptz NOT NULL,
  event text NOT NULL CHECK (event ~ '^[a-z_]+\.[a-z_]+$'),
  actor text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
  reason text CHECK (length(reason) BETWEEN 1 AND 1000),
  tenant_id text CHECK (length(tenant_id) BETWEEN 1 AND 64),
  grant_id uuid,
  detail jsonb NOT NULL DEFAULT '{}',
  prev_hash text NOT NULL,
  hash text NOT NULL
);
--> statement-breakpoint
CREATE INDEX "tenant_rls_audit_tenant_idx" ON "public"."tenant_rls_audit" (tenant_id, occurred_at);
--> statement-breakpoint
CREATE FUNCTION "public"."tenant_rls_audit_hash" (entry "public"."tenant_rls_audit") RETURNS text LANGUAGE sql STABLE
  SET search_path TO pg_catalog, pg_temp SET "TimeZone" TO 'UTC'
  AS $$ SELECT encode(sha256(convert_to((to_jsonb(entry) - 'hash')::text, 'UTF8')), 'hex') $$;
--> statement-breakpoint
CREATE FUNCTION "public"."tenant_rls_audit_chain" () RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path TO pg_catalog, pg_temp
  AS $$
DECLARE
  previous text;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'fastify-tenant-rls: audit rows are appended in READ COMMITTED transactions only, not %', current_setting('transaction_isolation') USING ERRCODE = '25001';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('fastify-tenant-rls audit chain'), hashtext(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME));
  SELECT a.hash INTO previous FROM "public"."tenant_rls_audit" a ORDER BY a.seq DESC LIMIT 1;
  NEW.prev_hash := coalesce(previous, '0000000000000000000000000000000000000000000000000000000000000000');
  NEW.seq := nextval('"public"."tenant_rls_audit_seq"');
  NEW.occurred_at := clock_timestamp();
  NEW.hash := "public"."tenant_rls_audit_hash"(NEW);
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE FUNCTION "public"."tenant_rls_audit_refuse_change" () RETURNS trigger LANGUAGE plpgsql
  SET search_path TO pg_catalog, pg_temp
  AS $$
BEGIN
  RAISE EXCEPTION 'fastify-tenant-rls: the audit trail %.% is append-only; % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = '42501';
END
$$;
--> statement-breakpoint
CREATE TRIGGER "tenant_rls_audit_chain" BEFORE INSERT ON "public"."tenant_rls_audit" FOR EACH ROW EXECUTE FUNCTION "public"."tenant_rls_audit_chain"();
--> statement-breakpoint
CREATE TRIGGER "tenant_rls_audit_append_only" BEFORE UPDATE OR DELETE ON "public"."tenant_rls_audit" FOR EACH ROW EXECUTE FUNCTION "public"."tenant_rls_audit_refuse_change"();
--> statement-breakpoint
CREATE TRIGGER "tenant_rls_audit_no_truncate" BEFORE TRUNCATE ON "public"."tenant_rls_audit" FOR EACH STATEMENT EXECUTE FUNCTION "public"."tenant_rls_audit_refuse_change"();
--> statement-breakpoint
REVOKE ALL ON TABLE "public"."tenant_rls_audit" FROM PUBLIC;
--> statement-breakpoint
REVOKE ALL ON SEQUENCE "public"."tenant_rls_audit_seq" FROM PUBLIC;
--> statement-breakpoint
REVOKE ALL ON FUNCTION "public"."tenant_rls_audit_chain"() FROM PUBLIC;
--> statement-breakpoint
GRANT SELECT, INSERT (event, actor, reason, tenant_id, grant_id, detail) ON TABLE "public"."tenant_rls_audit" TO "example_system";
