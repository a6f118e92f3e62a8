#!/bin/sh
# The role that owns UrbanPulse's schema and tables, so that no long-running service needs the
# superuser: `migrate` and `retention` log in as it (deploy/compose.yaml). On TimescaleDB only a
# hypertable's owner may drop its chunks, delete from its continuous aggregates and alter their
# refresh jobs, which the hourly retention job does; a login, not a NOLOGIN group, because those
# two services are the only ones that need the owner's rights and a separate login in the group
# would hold exactly the same rights under a second password.
#
# Runs after 10-roles.sh (it needs the group roles) when the container initialises an empty data
# directory. It is idempotent: to upgrade a database that the superuser migrated (every table
# then the superuser's), run it once by hand before starting the new compose file:
#
#   docker compose -f deploy/compose.yaml exec timescaledb \
#       sh /docker-entrypoint-initdb.d/15-owner.sh
#
# It then hands every table, view, sequence and function the superuser owns in the schema to
# the owner, and makes the grants later migrations rely on (default privileges) the owner's.
set -eu
SECRETS_DIR=${URBANPULSE_SECRETS_DIR:-/run/secrets}
# Set while the image initialises a new database; not in `docker compose exec`.
POSTGRES_USER=${POSTGRES_USER:-postgres}

# psql's :'var' quoting makes the values literals; DO blocks cannot read psql variables, so the
# owner's name reaches them as a session setting.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v owner=urbanpulse_owner \
	-v password="$(tr -d '\n' < "$SECRETS_DIR/db_owner_password")" <<-'SQL'
	SELECT format('CREATE ROLE %I', :'owner')
	WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
	-- Spelled out, so that running this again also takes back anything granted since.
	SELECT format('ALTER ROLE %I LOGIN PASSWORD %L NOSUPERUSER NOCREATEDB NOCREATEROLE '
		'NOREPLICATION NOBYPASSRLS INHERIT', :'owner', :'password') \gexec
	SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'owner')
	\gexec
	-- The migrations read shared_preload_libraries (is TimescaleDB loadable?), a superuser-only
	-- setting otherwise.
	SELECT format('GRANT pg_read_all_settings TO %I', :'owner') \gexec
	-- Partition mode (plain PostgreSQL): migration 0006 gives the readings tables to the
	-- ingestion role (it creates and drops their partitions), which only a member may do, and
	-- retention drops that role's partitions. The owner gains nothing else by it: every other
	-- table the ingestion role may touch is the owner's already.
	SELECT format('GRANT urbanpulse_ingest TO %I', :'owner') \gexec
	-- The one step that stays the superuser's: TimescaleDB is not a trusted extension. The
	-- image creates it in the new database already; this covers a database made otherwise.
	SELECT 'CREATE EXTENSION IF NOT EXISTS timescaledb'
	WHERE EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb')
	  AND current_setting('shared_preload_libraries') LIKE '%timescaledb%' \gexec
	-- The schema's owner may create in it and revoke PUBLIC's CREATE there (migration 0006).
	SELECT format('ALTER SCHEMA public OWNER TO %I', :'owner') \gexec

	SELECT set_config('urbanpulse.owner', :'owner', false);
	DO $$
	DECLARE
		heir text := current_setting('urbanpulse.owner');
		item record;
		aggregates text[] := ARRAY[]::text[];
	BEGIN
		IF to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL THEN
			aggregates := ARRAY(SELECT format('%I.%I', view_schema, view_name)::regclass::text
				FROM timescaledb_information.continuous_aggregates);
		END IF;
		-- Tables before views: TimescaleDB moves a hypertable's chunks, a continuous
		-- aggregate's materialisation and their jobs along with it. Partitions are tables of
		-- their own here. Sequences owned by a column follow their table; extension objects
		-- stay the extension's.
		FOR item IN
			SELECT c.oid::regclass::text AS name, c.relkind
			FROM pg_class c
			WHERE c.relnamespace = 'public'::regnamespace
			  AND pg_get_userbyid(c.relowner) = current_user
			  AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
			  AND NOT EXISTS (
				SELECT FROM pg_depend d
				WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
				  AND d.deptype IN ('a', 'i', 'e'))
			ORDER BY c.relkind IN ('v', 'm'), c.oid
		LOOP
			EXECUTE format('ALTER %s %s OWNER TO %I',
				CASE WHEN item.name = ANY(aggregates) OR item.relkind = 'm'
					THEN 'MATERIALIZED VIEW'
					WHEN item.relkind = 'v' THEN 'VIEW'
					WHEN item.relkind = 'S' THEN 'SEQUENCE'
					WHEN item.relkind = 'f' THEN 'FOREIGN TABLE'
					ELSE 'TABLE' END,
				item.name, heir);
		END LOOP;
		-- TimescaleDB before 2.26 leaves a hypertable's policy jobs (compression, the
		-- aggregates' refresh) with the old owner on ALTER ... OWNER TO; later versions move
		-- them, as its REASSIGN OWNED always did. A job runs as its owner, and only its owner
		-- may alter it, as retention does to the refresh jobs: moved here as TimescaleDB moves
		-- them. Its own jobs (telemetry, job statistics) have no hypertable and stay.
		IF to_regclass('_timescaledb_config.bgw_job') IS NOT NULL THEN
			UPDATE _timescaledb_config.bgw_job
			SET owner = (SELECT oid FROM pg_roles WHERE rolname = heir)::regrole
			WHERE owner::oid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
			  AND hypertable_id IS NOT NULL;
		END IF;
		-- Functions (the audited erasure runs as its owner, SECURITY DEFINER). Not an event
		-- trigger's: it runs in whoever issues DDL, the superuser included, so only the
		-- superuser may change it.
		FOR item IN
			SELECT p.oid::regprocedure AS name
			FROM pg_proc p
			WHERE p.pronamespace = 'public'::regnamespace
			  AND pg_get_userbyid(p.proowner) = current_user
			  AND p.prorettype <> 'event_trigger'::regtype
			  AND NOT EXISTS (
				SELECT FROM pg_depend d
				WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
		LOOP
			EXECUTE format('ALTER ROUTINE %s OWNER TO %I', item.name, heir);
		END LOOP;
	END $$;

	-- Tables and sequences of later migrations, which the owner creates: the grants migration
	-- 0006 makes by default for whoever migrates, made for the owner (a no-op when 0006 ran as
	-- the owner; an upgrade when the superuser ran it).
	ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
		GRANT SELECT ON TABLES TO urbanpulse_api, urbanpulse_monitor;
	ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
		GRANT USAGE ON SEQUENCES TO urbanpulse_ingest, urbanpulse_api, urbanpulse_monitor;
SQL
