-- signedContextSql (fastify-tenant-rls/schema): run as example_keys or a superuser, before the tenant tables
CREATE SCHEMA tenant_rls AUTHORIZATION example_keys;
--> statement-breakpoint
REVOKE ALL ON SCHEMA tenant_rls FROM PUBLIC;
--> statement-breakpoint
CREATE TABLE tenant_rls.signing_keys (
  id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,32}$'),
  inner_pad bytea NOT NULL CHECK (length(inner_pad) = 64),
  outer_pad bytea NOT NULL CHECK (length(outer_pad) = 64),
  added_at timestamptz NOT NULL DEFAULT now()
);
--> statement-breakpoint
ALTER TABLE tenant_rls.signing_keys OWNER TO example_keys;
--> statement-breakpoint
REVOKE ALL ON TABLE tenant_rls.signing_keys FROM PUBLIC;
--> statement-breakpoint
CREATE FUNCTION tenant_rls.add_key(key_id text, secret bytea) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $add_key$
DECLARE
  block bytea;
  ipad bytea;
  opad bytea;
BEGIN
  IF secret IS NULL OR length(secret) < 32 THEN
    RAISE EXCEPTION 'tenant_rls.add_key: the secret of key % must be at least 32 bytes', key_id USING ERRCODE = '22023';
  END IF;
  block := CASE WHEN length(secret) > 64 THEN sha256(secret) ELSE secret END;
  block := block || decode(repeat('00', 64 - length(block)), 'hex');
  ipad := block;
  opad := block;
  FOR i IN 0..63 LOOP
    ipad := set_byte(ipad, i, get_byte(block, i) # 54);
    opad := set_byte(opad, i, get_byte(block, i) # 92);
  END LOOP;
  INSERT INTO tenant_rls.signing_keys (id, inner_pad, outer_pad) VALUES (key_id, ipad, opad);
END
$add_key$;
--> statement-breakpoint
CREATE FUNCTION tenant_rls.remove_key(key_id text) RETURNS boolean
LANGUAGE sql SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $remove_key$
  WITH removed AS (DELETE FROM tenant_rls.signing_keys WHERE id = key_id RETURNING id)
  SELECT count(*) > 0 FROM removed
$remove_key$;
--> statement-breakpoint
ALTER FUNCTION tenant_rls.add_key(text, bytea) OWNER TO example_keys;
--> statement-breakpoint
REVOKE ALL ON FUNCTION tenant_rls.add_key(text, bytea) FROM PUBLIC;
--> statement-breakpoint
ALTER FUNCTION tenant_rls.remove_key(text) OWNER TO example_keys;
--> statement-breakpoint
REVOKE ALL ON FUNCTION tenant_rls.remove_key(text) FROM PUBLIC;
--> statement-breakpoint
CREATE VIEW tenant_rls.verified_tenant AS
SELECT nullif(current_setting('app.current_tenant_id', true), '') AS tenant_id
FROM tenant_rls.signing_keys AS k
WHERE k.id = split_part(current_setting('tenant_rls.signature', true), '.', 2)
  AND CASE
    WHEN nullif(current_setting('app.current_tenant_id', true), '') IS NOT NULL AND split_part(current_setting('tenant_rls.signature', true), '.', 1) = 'v1' AND split_part(current_setting('tenant_rls.signature', true), '.', 5) = ''
      AND encode(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(concat_ws(E'\n', 'fastify-tenant-rls/v1', k.id, pg_backend_pid()::text, split_part(current_setting('tenant_rls.signature', true), '.', 3), current_setting('app.current_tenant_id', true)), 'UTF8'))), 'hex') = split_part(current_setting('tenant_rls.signature', true), '.', 4)
    THEN split_part(current_setting('tenant_rls.signature', true), '.', 3)::bigint > (extract(epoch FROM now()) * 1000)::bigint
    ELSE false END;
--> statement-breakpoint
ALTER VIEW tenant_rls.verified_tenant OWNER TO example_keys;
--> statement-breakpoint
REVOKE ALL ON TABLE tenant_rls.verified_tenant FROM PUBLIC;
--> statement-breakpoint
CREATE FUNCTION tenant_rls.current_tenant() RETURNS text
LANGUAGE plpgsql STABLE SECURITY INVOKER PARALLEL RESTRICTED
AS $current_tenant$
BEGIN
  RETURN (SELECT tenant_id FROM tenant_rls.verified_tenant);
END
$current_tenant$;
--> statement-breakpoint
ALTER FUNCTION tenant_rls.current_tenant() OWNER TO example_keys;
--> statement-breakpoint
REVOKE ALL ON FUNCTION tenant_rls.current_tenant() FROM PUBLIC;
--> statement-breakpoint
GRANT USAGE ON SCHEMA tenant_rls TO example_app;
--> statement-breakpoint
GRANT SELECT ON TABLE tenant_rls.verified_tenant TO example_app;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION tenant_rls.current_tenant() TO example_app;
