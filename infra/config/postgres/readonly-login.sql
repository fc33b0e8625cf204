-- Run once by the `ledger-readonly-login` service of infra/compose.yaml, after `migrate`:
-- gives Grafana's login (LEDGER_RO_USER, password LEDGER_RO_PASSWORD) the read-only role
-- `dispatcher_readonly` that the migrations create. The password lives in the environment,
-- never in a migration, so this is a deployment step, not a revision. Safe to run again.
\set ON_ERROR_STOP on
\getenv ro_user LEDGER_RO_USER
\getenv ro_password LEDGER_RO_PASSWORD

SELECT format('CREATE ROLE %I LOGIN', :'ro_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'ro_user')
\gexec

SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'ro_user', :'ro_password')
\gexec

-- Until a migration creates the role there is nothing to grant; the dashboards then fail on
-- permissions, which names the cause, instead of this step failing the whole stack.
SELECT format('GRANT dispatcher_readonly TO %I', :'ro_user')
WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = 'dispatcher_readonly')
\gexec
