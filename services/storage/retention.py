"""Retention: the policies table (``retention_policies``) and the job that applies it.

The one module with that table's SQL. What the policies mean (which one a series falls under,
what a policy may say) is ``retention_policy``, pure; this module reads and writes them, and
:func:`apply` removes what they expire, in bounded work:

- whole partitions (partition mode) or chunks (TimescaleDB) whose range ends before the longest
  raw retention of all policies are dropped, both readings tables at once;
- raw readings of a series past its own policy, and rollup rows past their grain's years, are
  deleted in batches of ``batch_rows``, each committed, at most ``max_rows`` a run: the next run
  goes on where this one stopped (``ApplyResult.complete`` says whether it did).

Rollups outlive the raw readings: removing raw rows never changes them. Partition mode's
refresh recomputes only buckets the writers touched, and never before :func:`refresh_floor`;
TimescaleDB's continuous aggregates do log the deletions as invalidations, so every refresh of
them (the policies' ``start_offset``, which :func:`apply` keeps in step, and ``rollups``') starts
after :func:`refresh_floor` as well, where every series still has its raw readings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from gateway.kinds import QUANTITIES

from . import partitions
from .retention_policy import (
    DEFAULT,
    LEVELS,
    InvalidPolicyError,
    Key,
    Policy,
    longest_raw,
    raw_horizon,
    resolve,
    rollup_horizon,
    shortest,
)

Conn = psycopg.Connection[TupleRow]

DAY = timedelta(days=1)
# Rows one DELETE removes and rows one run removes at most: a batch is a short transaction
# (about a second on the dev machine), and a run stays within minutes even far behind.
BATCH_ROWS = 50_000
MAX_ROWS = 5_000_000
RAW_TABLES = ("readings", "readings_extra")
ROLLUP_VIEWS = {"1m": "readings_1m", "1h": "readings_1h", "1d": "readings_1d"}
# The grain each grain is computed from (None: the raw readings).
SOURCE = {"1m": None, "1h": "1m", "1d": "1h"}


def policies(conn: Conn) -> dict[Key, Policy]:
    rows = conn.execute(
        "SELECT scope, name, raw_days, rollup_1m_years, rollup_1h_years, rollup_1d_years "
        "FROM retention_policies"
    ).fetchall()
    return {
        (str(s), str(n)): Policy(str(s), str(n), int(d), (y1, y2, y3))
        for s, n, d, y1, y2, y3 in rows
    }


def listed(conn: Conn) -> list[dict[str, object]]:
    """Every policy with who set it and when, the default first, then by scope and name."""
    rows = conn.execute(
        "SELECT scope, name, raw_days, rollup_1m_years, rollup_1h_years, rollup_1d_years, "
        "updated_by, updated_at FROM retention_policies "
        "ORDER BY array_position(ARRAY['default', 'domain', 'kind', 'quantity'], scope), name"
    ).fetchall()
    out = []
    for s, n, d, y1, y2, y3, by, at in rows:
        policy = Policy(str(s), str(n), int(d), (y1, y2, y3))
        out.append({**policy.as_dict(), "updated_by": by, "updated_at": at})
    return out


def set_policy(conn: Conn, policy: Policy, actor: str) -> None:
    """Store ``policy`` (made by ``retention_policy.make_policy``), replacing its selector's;
    the caller commits."""
    conn.execute(
        "INSERT INTO retention_policies (scope, name, raw_days, rollup_1m_years, "
        "rollup_1h_years, rollup_1d_years, updated_by, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT (scope, name) DO UPDATE SET "
        "raw_days = excluded.raw_days, rollup_1m_years = excluded.rollup_1m_years, "
        "rollup_1h_years = excluded.rollup_1h_years, rollup_1d_years = excluded.rollup_1d_years, "
        "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        (policy.scope, policy.name, policy.raw_days, *policy.rollup_years, actor),
    )


def unset_policy(conn: Conn, scope: str, name: str) -> bool:
    """Remove a selector's policy (its series fall back to a less specific one); False when
    there was none. The default cannot be removed."""
    if scope == "default":
        raise InvalidPolicyError("scope", "the default policy can be changed, not removed")
    return (
        conn.execute(
            "DELETE FROM retention_policies WHERE scope = %s AND name = %s", (scope, name)
        ).rowcount
        > 0
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WIDTH = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": DAY}


def refresh_floor(conn: Conn, level: str, now: datetime | None = None) -> datetime | None:
    """The earliest time a refresh of rollup ``level`` may recompute: where every series still
    has the rows that grain is computed from (the shortest retention of its source), at a whole
    bucket of the grain, plus one bucket of margin. None: nothing of the source is removed."""
    kept = shortest(policies(conn).values() or [DEFAULT], SOURCE[level])
    if kept is None:
        return None
    width = WIDTH[level]
    moment = (now or datetime.now(UTC)) - kept
    return _EPOCH + -((_EPOCH - moment) // width) * width + width


@dataclass(frozen=True, slots=True)
class Group:
    """The series of one (domain, kind) under one policy: the quantities it covers there."""

    domain: str
    kind: str
    policy: Policy
    quantity_keys: tuple[int, ...]


def groups(conn: Conn, known: Mapping[Key, Policy]) -> list[Group]:
    """Every registered (domain, kind), split by the policy each quantity falls under."""
    out: list[Group] = []
    for domain, kind in conn.execute("SELECT DISTINCT domain, kind FROM sensors ORDER BY 1, 2"):
        by_policy: dict[Policy, list[int]] = {}
        for quantity in QUANTITIES.values():
            policy = resolve(known, str(domain), str(kind), quantity.name)
            by_policy.setdefault(policy, []).append(quantity.key)
        for policy, keys in by_policy.items():
            out.append(Group(str(domain), str(kind), policy, tuple(sorted(keys))))
    return out


@dataclass(slots=True)
class ApplyResult:
    dry_run: bool
    raw_rows: int = 0
    rollup_rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    dropped: list[str] = field(default_factory=list)
    complete: bool = True

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "raw_rows": self.raw_rows,
            "rollup_rows": dict(self.rollup_rows),
            "dropped": list(self.dropped),
            "complete": self.complete,
        }


def _relation(conn: Conn, mode: str, level: str) -> str:
    """What rollup rows are deleted from: the table, or the aggregate's materialization."""
    if mode != "timescaledb":
        return ROLLUP_VIEWS[level]
    row = conn.execute(
        "SELECT format('%%I.%%I', materialization_hypertable_schema, "
        "materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates "
        "WHERE view_name = %s",
        (ROLLUP_VIEWS[level],),
    ).fetchone()
    assert row is not None, "continuous aggregate missing"
    return str(row[0])


def _delete(
    conn: Conn,
    relation: str,
    column: str,
    group: Group,
    before: datetime,
    *,
    dry_run: bool,
    batch_rows: int,
    budget: int,
) -> tuple[int, bool]:
    """Delete (or count) the group's rows of ``relation`` older than ``before``, in committed
    batches, at most ``budget`` rows; (rows, whether none are left)."""
    where = (
        f"FROM {relation} AS t JOIN sensors AS s ON s.key = t.sensor_key "
        f"WHERE s.domain = %(domain)s AND s.kind = %(kind)s "
        f"AND t.quantity_key = ANY(%(keys)s) AND t.{column} < %(before)s"
    )
    params = {
        "domain": group.domain,
        "kind": group.kind,
        "keys": list(group.quantity_keys),
        "before": before,
    }
    if dry_run:
        row = conn.execute(f"SELECT count(*) {where}", params).fetchone()
        conn.commit()
        return (int(row[0]) if row else 0), True
    done = 0
    while done < budget:
        size = min(batch_rows, budget - done)
        deleted = conn.execute(
            f"DELETE FROM {relation} WHERE (sensor_key, quantity_key, {column}) IN "
            f"(SELECT t.sensor_key, t.quantity_key, t.{column} {where} LIMIT %(size)s)",
            {**params, "size": size},
        ).rowcount
        conn.commit()
        done += deleted
        if deleted < size:
            return done, True
    return done, False


def _drop_expired(conn: Conn, mode: str, before: datetime, dry_run: bool) -> list[str]:
    """Drop the partitions or chunks of both readings tables that end before ``before``."""
    if mode != "timescaledb":
        return list(partitions.drop_expired(conn, before.timestamp(), dry_run=dry_run))
    dropped: list[str] = []
    for table in RAW_TABLES:
        call = "show_chunks" if dry_run else "drop_chunks"
        dropped += [
            str(r[0])
            for r in conn.execute(
                f"SELECT {call}(%s::regclass, older_than => %s::timestamptz)", (table, before)
            ).fetchall()
        ]
    conn.commit()
    return dropped


def sync_refresh_policies(conn: Conn, now: datetime | None = None) -> None:
    """TimescaleDB: each aggregate's refresh policy starts no earlier than its
    :func:`refresh_floor` (``start_offset``), so it never rebuilds buckets from removed rows."""
    moment = now or datetime.now(UTC)
    for level in LEVELS:
        floor = refresh_floor(conn, level, moment)
        offset = None if floor is None else max(moment - floor, timedelta(hours=1))
        conn.execute(
            "SELECT alter_job(j.job_id, config => jsonb_set(j.config, '{start_offset}', "
            "coalesce(to_jsonb(%s::interval::text), 'null'::jsonb))) "
            "FROM timescaledb_information.jobs j "
            "WHERE j.proc_name = 'policy_refresh_continuous_aggregate' "
            "AND j.hypertable_name = %s",
            (offset, ROLLUP_VIEWS[level]),
        )
    conn.commit()


def apply(
    conn: Conn,
    mode: str,
    now: datetime | None = None,
    *,
    dry_run: bool = False,
    batch_rows: int = BATCH_ROWS,
    max_rows: int = MAX_ROWS,
) -> ApplyResult:
    """Remove what the policies expire (or, ``dry_run``, count it); commits as it goes."""
    moment = now or datetime.now(UTC)
    known = policies(conn)
    result = ApplyResult(dry_run=dry_run)
    if mode == "timescaledb" and not dry_run:
        sync_refresh_policies(conn, moment)
    result.dropped = _drop_expired(
        conn, mode, moment - longest_raw(known.values() or [DEFAULT]), dry_run
    )
    budget = max_rows
    for group in groups(conn, known):
        for table in RAW_TABLES:
            rows, finished = _delete(
                conn,
                table,
                "time",
                group,
                raw_horizon(group.policy, moment),
                dry_run=dry_run,
                batch_rows=batch_rows,
                budget=budget,
            )
            result.raw_rows += rows
            budget -= 0 if dry_run else rows
            if not finished:
                result.complete = False
                return result
        for level in LEVELS:
            horizon = rollup_horizon(group.policy, level, moment)
            if horizon is None:
                continue
            rows, finished = _delete(
                conn,
                _relation(conn, mode, level),
                "bucket",
                group,
                horizon,
                dry_run=dry_run,
                batch_rows=batch_rows,
                budget=budget,
            )
            result.rollup_rows[level] += rows
            budget -= 0 if dry_run else rows
            if not finished:
                result.complete = False
                return result
    return result
