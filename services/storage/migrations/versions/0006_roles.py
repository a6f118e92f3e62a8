"""Least-privilege roles: one group role per process, granted only what it does (issue 14).

- ``urbanpulse_ingest``: reads the registry; writes readings, quarantine, events, the pack
  ledger, gateway status (``online``, ``last_seen`` only), pending sensors, and in partition
  mode the rollup tables its maintenance refreshes. In partition mode it also creates and drops
  the daily partitions, which PostgreSQL allows only to the parent table's owner: it owns
  ``readings`` and ``readings_extra`` there (and so could drop them, but no other table), and
  may create tables in the schema (a partition is one). An event trigger gives every new
  partition to it, whoever creates it (the migrator runs ``maintain`` too). In TimescaleDB
  mode INSERT suffices: TimescaleDB makes the chunks.
- ``urbanpulse_api``: reads everything it serves (API keys included: it checks them); writes
  the registry, API keys, alert acknowledgements, KPI targets and baselines, city settings and
  alert rules. Never readings, never DDL.
- ``urbanpulse_monitor``: reads everything but API keys; writes the current KPI values, alerts
  and their conditions, and events.
- ``urbanpulse_grafana``: reads only the rollups, the KPI and alert tables, the registry and
  the quarantine without its raw payloads; never API keys, never raw readings.

Set up only when the superuser or the schema's owner role ``urbanpulse_owner`` migrates (deploy/
migrates as the owner, which ``deploy/postgres/initdb/15-owner.sh`` makes): ``urbanpulse up``
migrates as the single non-superuser role owning its embedded database, which keeps doing
everything. The roles are NOLOGIN groups: each process logs in as a user that is a member of one
(``deploy/postgres/initdb/10-roles.sh`` creates them with ``ingest``, ``api``, ``monitor``,
``grafana``). Roles are cluster-wide, so they are created only where missing (by the superuser:
the owner may not create roles); the grants are per database. The partition owner's event
trigger needs the superuser too; without it ``partitions.ensure`` gives the migrator's new
partitions to the ingestion role itself.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.storage.roles import OWNER, is_superuser, sets_up_roles

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ROLES = ("urbanpulse_ingest", "urbanpulse_api", "urbanpulse_monitor", "urbanpulse_grafana")

CREATE_ROLES = """
DO $$
DECLARE name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['{roles}'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', name);
            -- Another database of the same server migrating at the same moment.
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END;
        END IF;
    END LOOP;
END $$;
""".format(roles="', '".join(ROLES))

REGISTRY = "districts, gateways, sensors, quantities, storage_settings, city_settings"
KPI = "kpi_targets, kpi_baselines, kpi_current, alert_rules, alerts, alert_conditions"
ROLLUPS = "readings_1m, readings_1h, readings_1d"
# Quarantine columns Grafana may count by: not the detail (it may quote the payload); the raw
# payloads are in quarantine_messages, which Grafana cannot read.
QUARANTINE_SAFE = (
    "id, received_at, topic, gateway_id, sensor_id, record_index, reason, replayed_at, message_id"
)

GRANTS = f"""
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {", ".join(ROLES)};

-- ingestion
GRANT SELECT ON {REGISTRY} TO urbanpulse_ingest;
GRANT SELECT, INSERT, UPDATE ON readings, readings_extra TO urbanpulse_ingest;
GRANT SELECT, INSERT, UPDATE, DELETE ON quarantine, quarantine_messages, events, pack_ledger,
    rollup_invalidations, rollup_watermarks TO urbanpulse_ingest;
GRANT UPDATE (online, last_seen) ON gateways TO urbanpulse_ingest;
GRANT INSERT ON sensors TO urbanpulse_ingest;
GRANT SELECT ON {ROLLUPS} TO urbanpulse_ingest;

-- the API
GRANT SELECT ON ALL TABLES IN SCHEMA public TO urbanpulse_api;
GRANT INSERT, UPDATE ON districts, gateways, sensors, api_keys TO urbanpulse_api;
GRANT UPDATE ON alerts TO urbanpulse_api;
GRANT INSERT, UPDATE, DELETE ON kpi_targets, kpi_baselines, city_settings, alert_rules
    TO urbanpulse_api;
GRANT INSERT ON events TO urbanpulse_api;

-- the monitor
GRANT SELECT ON ALL TABLES IN SCHEMA public TO urbanpulse_monitor;
REVOKE SELECT ON api_keys FROM urbanpulse_monitor;
GRANT INSERT, UPDATE, DELETE ON kpi_current, alerts, alert_conditions, events
    TO urbanpulse_monitor;

-- Grafana
GRANT SELECT ON {REGISTRY}, {KPI}, {ROLLUPS} TO urbanpulse_grafana;
GRANT SELECT ({QUARANTINE_SAFE}) ON quarantine TO urbanpulse_grafana;

GRANT USAGE ON ALL SEQUENCES IN SCHEMA public
    TO urbanpulse_ingest, urbanpulse_api, urbanpulse_monitor;
-- Tables of later migrations: readable by the API and the monitor (writes are granted there).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES
    TO urbanpulse_api, urbanpulse_monitor;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES
    TO urbanpulse_ingest, urbanpulse_api, urbanpulse_monitor;
"""


def _give_partitions(owner: str) -> str:
    """PL/pgSQL giving every existing partition of the readings tables to ``owner``."""
    return f"""FOR child IN
        SELECT inhrelid::regclass FROM pg_inherits
        WHERE inhparent IN ('readings'::regclass, 'readings_extra'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO {owner}', child);
    END LOOP;"""


# Partition mode: ingestion creates and drops partitions (owner only) and refreshes the
# rollup tables (delete and recompute bucket ranges).
PARTITIONED = """
DO $$
DECLARE child regclass;
BEGIN
    IF (SELECT value FROM storage_settings WHERE name = 'mode') = 'partitioned' THEN
        -- A partition is a table in the schema: creating one needs CREATE there. First: a
        -- table's new owner needs it too, unless a superuser makes the change.
        GRANT CREATE ON SCHEMA public TO urbanpulse_ingest;
        ALTER TABLE readings OWNER TO urbanpulse_ingest;
        ALTER TABLE readings_extra OWNER TO urbanpulse_ingest;
        {partitions_to_ingest}
        GRANT INSERT, UPDATE, DELETE ON readings_1m, readings_1h, readings_1d
            TO urbanpulse_ingest;
    END IF;
END $$;
""".format(partitions_to_ingest=_give_partitions("urbanpulse_ingest"))

# Superuser only (event triggers are): every new partition to the ingestion role, whoever
# creates it.
PARTITION_TRIGGER = """
CREATE FUNCTION urbanpulse_partition_owner() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE created record;
BEGIN
    FOR created IN
        SELECT c.objid FROM pg_event_trigger_ddl_commands() c
        JOIN pg_inherits i ON i.inhrelid = c.objid
        JOIN pg_class parent ON parent.oid = i.inhparent
        WHERE c.command_tag = 'CREATE TABLE'
          AND parent.relname IN ('readings', 'readings_extra')
          AND pg_get_userbyid(parent.relowner) = 'urbanpulse_ingest'
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO urbanpulse_ingest', created.objid::regclass);
    END LOOP;
END $$;
CREATE EVENT TRIGGER urbanpulse_partition_owner ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION urbanpulse_partition_owner();
"""

DOWNGRADE = f"""
DROP EVENT TRIGGER IF EXISTS urbanpulse_partition_owner;
DROP FUNCTION IF EXISTS urbanpulse_partition_owner();
DO $$
DECLARE child regclass;
BEGIN
    {_give_partitions("CURRENT_USER")}
END $$;
ALTER TABLE readings OWNER TO CURRENT_USER;
ALTER TABLE readings_extra OWNER TO CURRENT_USER;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {", ".join(ROLES)};
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {", ".join(ROLES)};
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {", ".join(ROLES)};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {", ".join(ROLES)};
REVOKE USAGE, CREATE ON SCHEMA public FROM {", ".join(ROLES)};
"""


def _missing_roles() -> list[str]:
    present = op.get_bind().scalars(
        sa.text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:roles)"),
        {"roles": list(ROLES)},
    )
    return sorted(set(ROLES) - set(present))


def upgrade() -> None:
    bind = op.get_bind()
    if not sets_up_roles(bind):
        # `urbanpulse up` migrates as the one role that owns its embedded database (no
        # CREATEROLE, and an event trigger needs a superuser): it keeps that single role.
        op.execute(
            "DO $$ BEGIN RAISE NOTICE 'least-privilege roles not set up: migrations run as "
            f"neither a superuser nor {OWNER} (deploy/ migrates as {OWNER})'; END $$"
        )
        return
    superuser = is_superuser(bind)
    if superuser:
        op.execute(CREATE_ROLES)
    elif missing := _missing_roles():
        raise RuntimeError(
            f"roles {', '.join(missing)} do not exist and {OWNER} may not create them: run "
            "deploy/postgres/initdb/10-roles.sh and 15-owner.sh as the superuser first"
        )
    op.execute(GRANTS)
    op.execute(PARTITIONED)
    if superuser:
        op.execute(PARTITION_TRIGGER)


def downgrade() -> None:
    exists = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM pg_roles WHERE rolname = ANY(:roles)"),
        {"roles": list(ROLES)},
    )
    if not sets_up_roles(op.get_bind()) or exists != len(ROLES):
        return  # upgrade set nothing up
    # The roles stay: they are the server's, and other databases on it may use them.
    op.execute(DOWNGRADE)
