-- auditTrailSql (fastify-tenant-rls/elevated): the audit trail elevated.audit_trail, run as its owner
CREATE SEQUENCE "elevated"."audit_trail_seq" AS bigint;
--> statement-breakpoint
CREATE TABLE "elevated"."audit_trail" (
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
CREATE INDEX "audit_trail_tenant_idx" ON "elevated"."audit_trail" (tenant_id, occurred_at);
--> statement-breakpoint
CREATE FUNCTION "elevated"."audit_trail_hash" (entry "elevated"."audit_trail") RETURNS text LANGUAGE sql STABLE
  SET search_path TO pg_catalog, pg_temp SET "TimeZone" TO 'UTC'
  AS $$ SELECT encode(sha256(convert_to((to_jsonb(entry) - 'hash')::text, 'UTF8')), 'hex') $$;
--> statement-breakpoint
CREATE FUNCTION "elevated"."audit_trail_chain" () RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path TO pg_catalog, pg_temp
  AS $$
DECLARE
  previous text;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'fastify-tenant-rls: audit rows are appended in READ COMMITTED transactions only, not %', current_setting('transaction_isolation') USING ERRCODE = '25001';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('fastify-tenant-rls audit chain'), hashtext(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME));
  SELECT a.hash INTO previous FROM "elevated"."audit_trail" a ORDER BY a.seq DESC LIMIT 1;
  NEW.prev_hash := coalesce(previous, '0000000000000000000000000000000000000000000000000000000000000000');
  NEW.seq := nextval('"elevated"."audit_trail_seq"');
  NEW.occurred_at := clock_timestamp();
  NEW.hash := "elevated"."audit_trail_hash"(NEW);
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE FUNCTION "elevated"."audit_trail_refuse_change" () RETURNS trigger LANGUAGE plpgsql
  SET search_path TO pg_catalog, pg_temp
  AS $$
BEGIN
  RAISE EXCEPTION 'fastify-tenant-rls: the audit trail %.% is append-only; % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = '42501';
END
$$;
--> statement-breakpoint
CREATE TRIGGER "audit_trail_chain" BEFORE INSERT ON "elevated"."audit_trail" FOR EACH ROW EXECUTE FUNCTION "elevated"."audit_trail_chain"();
--> statement-breakpoint
CREATE TRIGGER "audit_trail_append_only" BEFORE UPDATE OR DELETE ON "elevated"."audit_trail" FOR EACH ROW EXECUTE FUNCTION "elevated"."audit_trail_refuse_change"();
--> statement-breakpoint
CREATE TRIGGER "audit_trail_no_truncate" BEFORE TRUNCATE ON "elevated"."audit_trail" FOR EACH STATEMENT EXECUTE FUNCTION "elevated"."audit_trail_refuse_change"();
--> statement-breakpoint
COMMENT ON TABLE "elevated"."audit_trail" IS 'fastify-tenant-rls library table, not a tenant table: the audit trail of elevated access';
--> statement-breakpoint
REVOKE ALL ON TABLE "elevated"."audit_trail" FROM PUBLIC;
--> statement-breakpoint
REVOKE ALL ON SEQUENCE "elevated"."audit_trail_seq" FROM PUBLIC;
--> statement-breakpoint
REVOKE ALL ON FUNCTION "elevated"."audit_trail_chain"() FROM PUBLIC;
--> statement-breakpoint
GRANT SELECT, INSERT (event, actor, reason, tenant_id, grant_id, detail) ON TABLE "elevated"."audit_trail" TO "example_system";
