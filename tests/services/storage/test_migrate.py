"""Migrations, storage modes and `db status`, against a real server."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.kinds import QUANTITIES
from services.storage import migrate
from services.storage.errors import ModeError
from services.storage.schema import TIMESERIES_TABLES, metadata
from services.storage.urls import libpq_url, sqlalchemy_url

RELATIONS = ("readings", "readings_extra", "readings_1m", "readings_1h", "readings_1d")


def _columns(url: str) -> dict[str, list[tuple[str, str]]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return {
            relation: [
                (str(name), str(kind))
                for name, kind in conn.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                    "ORDER BY attnum",
                    (relation,),
                )
            ]
            for relation in RELATIONS
        }


def test_status_of_an_empty_database_lists_the_pending_migrations(empty_database: str) -> None:
    status = migrate.status(empty_database)
    assert status.mode is None
    assert status.current is None
    assert status.pending == (
        "0001",
        "0002",
        "0003",
        "0004",
        "0005",
        "0006",
        "0010",
        "0011",
        "0012",
        "0013",
    )
    assert status.pending[-1] == status.head


def test_upgrade_without_timescaledb_chooses_partitions(empty_database: str) -> None:
    with psycopg.connect(libpq_url(empty_database)) as conn:
        preload = str(conn.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]
    if "timescaledb" in preload:
        pytest.skip("this server offers TimescaleDB")
    assert migrate.upgrade(empty_database) == "partitioned"
    status = migrate.status(empty_database)
    assert (status.mode, status.current, status.pending) == ("partitioned", status.head, ())
    assert status.timescaledb is None


def test_asking_for_timescaledb_where_it_is_absent_is_a_clear_error(empty_database: str) -> None:
    with psycopg.connect(libpq_url(empty_database)) as conn:
        preload = str(conn.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]
    if "timescaledb" in preload:
        pytest.skip("this server offers TimescaleDB")
    with pytest.raises(ModeError, match="does not offer the timescaledb extension"):
        migrate.upgrade(empty_database, mode="timescaledb")


def test_upgrade_twice_is_a_no_op_and_keeps_the_mode(database_url: str, storage_mode: str) -> None:
    assert migrate.upgrade(database_url) == storage_mode
    other = "partitioned" if storage_mode == "timescaledb" else "timescaledb"
    with pytest.raises(ModeError, match=f"created in '{storage_mode}' mode"):
        migrate.upgrade(database_url, mode=other)


def test_status_reports_the_mode(database_url: str, storage_mode: str) -> None:
    status = migrate.status(database_url)
    assert status.mode == storage_mode
    assert status.pending == ()
    assert (status.timescaledb is not None) == (storage_mode == "timescaledb")


def test_the_quantities_table_follows_the_kind_catalog(
    db: psycopg.Connection[tuple[object, ...]],
) -> None:
    rows = db.execute("SELECT key, name, unit FROM quantities ORDER BY key").fetchall()
    assert rows == [
        (q.key, q.name, q.unit) for q in sorted(QUANTITIES.values(), key=lambda q: q.key)
    ]


def test_the_migrated_registry_matches_the_metadata(make_database: object) -> None:
    url = make_database("partitioned")  # type: ignore[operator]
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    # Time-series relations differ per mode by design: checked below.
                    "include_object": lambda obj, name, kind, _reflected, _other: (
                        not (
                            kind == "table"
                            and (
                                name in TIMESERIES_TABLES
                                or name.startswith("readings_")
                                or name == "alembic_version"
                            )
                        )
                    ),
                },
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_both_modes_expose_the_same_relations_and_columns(make_database: object) -> None:
    partitioned = _columns(make_database("partitioned"))  # type: ignore[operator]
    assert partitioned["readings"] == [
        ("time", "timestamp with time zone"),
        ("sensor_key", "integer"),
        ("quantity_key", "smallint"),
        ("value", "double precision"),
    ]
    for relation in ("readings_1m", "readings_1h", "readings_1d"):
        assert [name for name, _ in partitioned[relation]] == [
            "bucket",
            "sensor_key",
            "quantity_key",
            "count",
            "sum",
            "min",
            "max",
            "first",
            "last",
            "first_time",
            "last_time",
        ]
    try:
        timescale = _columns(make_database("timescaledb"))  # type: ignore[operator]
    except pytest.skip.Exception:
        return
    assert timescale == partitioned


@pytest.mark.timescaledb
def test_timescaledb_mode_builds_hypertables_aggregates_and_policies(make_database: object) -> None:
    url = make_database("timescaledb")  # type: ignore[operator]
    with psycopg.connect(libpq_url(url)) as conn:
        hypertables = {
            r[0]
            for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
        assert {"readings", "readings_extra"} <= hypertables
        aggregates = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT view_name, materialized_only "
                "FROM timescaledb_information.continuous_aggregates"
            )
        }
        assert aggregates == {"readings_1m": False, "readings_1h": False, "readings_1d": False}
        jobs = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT proc_name, coalesce(hypertable_name, '') FROM timescaledb_information.jobs "
                "WHERE proc_name <> 'policy_job_stat_history_retention'"
            )
        }
        assert ("policy_compression", "readings") in jobs
        # Raw retention is `urbanpulse retention apply`'s (per domain, kind, quantity; migration
        # 0012), and the 1-minute aggregate's refresh stops short of the raw horizon (400 days).
        assert not any(proc == "policy_retention" for proc, _ in jobs)
        assert sum(1 for proc, _ in jobs if proc == "policy_refresh_continuous_aggregate") == 3
        start_offset = conn.execute(
            "SELECT config->>'start_offset' FROM timescaledb_information.jobs "
            "WHERE hypertable_name = 'readings_1m'"
        ).fetchone()
        assert start_offset == ("399 days",)
