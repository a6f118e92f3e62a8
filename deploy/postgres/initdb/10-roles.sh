#!/bin/sh
# Runs once, when the TimescaleDB container initialises an empty data directory: one login per
# process, each a member of the group role that migration 0006 grants its privileges to. The
# group roles are created here too (NOLOGIN) so that the logins can join them before the first
# migration; 0006 creates them only where they are missing. Passwords come from secret files.
set -eu
# Where compose mounts the secrets (another directory in tests/deploy/test_roles.py).
SECRETS_DIR=${URBANPULSE_SECRETS_DIR:-/run/secrets}

password() {
	# psql's :'var' quoting makes the value a literal, whatever it contains.
	tr -d '\n' < "$SECRETS_DIR/$1"
}

for group in urbanpulse_ingest urbanpulse_api urbanpulse_monitor urbanpulse_grafana; do
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -v group="$group" <<-'SQL'
		SELECT format('CREATE ROLE %I NOLOGIN', :'group')
		WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'group') \gexec
	SQL
done

for login in ingest api monitor grafana; do
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
		-v login="$login" -v group="urbanpulse_$login" -v password="$(password "db_${login}_password")" <<-'SQL'
		SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %I', :'login', :'password', :'group') \gexec
	SQL
done

# postgres-exporter scrapes as the monitor login.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c 'GRANT pg_monitor TO monitor'
