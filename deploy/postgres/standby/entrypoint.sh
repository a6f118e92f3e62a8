#!/bin/sh
# The streaming standby's entrypoint (compose service `standby`, profile `replica`), in the
# primary's own TimescaleDB image: on an empty data directory, a base backup of the primary
# (pg_basebackup -R writes standby.signal and primary_conninfo), then the server, which starts
# in recovery and streams the primary's WAL from then on. The backup copies the primary's
# configuration (shared_preload_libraries, pg_hba.conf) and its roles, so Grafana's and the
# API's logins work here with their passwords, read-only.
#
# The replication password comes from a secret file and reaches libpq through a password file
# beside (not in) the data directory, rewritten at every start (a rotated secret takes effect
# on the next restart); primary_conninfo names that file, never the password.
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
SECRETS_DIR=${URBANPULSE_SECRETS_DIR:-/run/secrets}
PRIMARY_HOST=${URBANPULSE_PRIMARY_HOST:?the primary server to replicate}
PRIMARY_PORT=${URBANPULSE_PRIMARY_PORT:-5432}
REPLICATION_USER=${URBANPULSE_REPLICATION_USER:-replicator}
PASSFILE=${URBANPULSE_REPLICATION_PASSFILE:-$(dirname "$PGDATA")/.pgpass-replication}

if [ "$(id -u)" = 0 ]; then
	# PostgreSQL refuses to run as root: own the volume, then run again as postgres (the image
	# ships su-exec on Alpine, gosu on Debian).
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 700 "$PGDATA"
	if command -v su-exec >/dev/null; then
		exec su-exec postgres "$0" "$@"
	fi
	exec gosu postgres "$0" "$@"
fi

umask 077
# hostname:port:database:username:password; ':' and '\' in the password are escaped.
printf '*:*:replication:%s:%s\n' "$REPLICATION_USER" \
	"$(tr -d '\n' < "$SECRETS_DIR/db_replication_password" | sed 's/[\\:]/\\&/g')" > "$PASSFILE"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do
		echo "standby: waiting for the primary $PRIMARY_HOST:$PRIMARY_PORT" >&2
		sleep 2
	done
	echo "standby: base backup of $PRIMARY_HOST:$PRIMARY_PORT" >&2
	pg_basebackup -D "$PGDATA" -R -X stream -c fast -d \
		"host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER passfile=$PASSFILE application_name=standby"
fi

exec postgres -D "$PGDATA" "$@"
