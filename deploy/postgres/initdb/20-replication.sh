#!/bin/sh
# Runs once, when the TimescaleDB container initialises an empty data directory: the login the
# streaming standby (compose profile `replica`, ../standby/entrypoint.sh) replicates as, and
# the pg_hba.conf line that lets it in. The password comes from a secret file; the line asks
# for it (SCRAM). The image restarts the server after its init scripts, so the line is read
# then. Harmless when no standby ever runs: the role can replicate and nothing else.
set -eu
SECRETS_DIR=${URBANPULSE_SECRETS_DIR:-/run/secrets}
REPLICATION_USER=${URBANPULSE_REPLICATION_USER:-replicator}

# psql's :'var' quoting makes the password a literal, whatever it contains.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v login="$REPLICATION_USER" \
	-v password="$(tr -d '\n' < "$SECRETS_DIR/db_replication_password")" <<-'SQL'
	SELECT format('CREATE ROLE %I LOGIN REPLICATION PASSWORD %L', :'login', :'password') \gexec
SQL

# Replication connections match only lines naming `replication` (not `all`); from any address
# of the compose network, with the password.
printf 'host replication %s all scram-sha-256\n' "$REPLICATION_USER" >> "$PGDATA/pg_hba.conf"
