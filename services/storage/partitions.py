"""Range partitions of ``readings`` and ``readings_extra`` (partition mode only).

Partitions are aligned to the partition interval from the Unix epoch (UTC midnight for the
default of one day) and named after their start, ``readings_p20261124`` or, for intervals
shorter than a day, ``readings_p20261124t0600``. ``maintain`` creates them ahead and drops those
past every retention policy's raw retention; the writer creates any it still lacks, so no
reading is refused for want of a partition (the ingest validator has already bounded how old
or new a time may be).
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from .retention_policy import longest_raw
from .urls import libpq_url

PARTITIONED_TABLES = ("readings", "readings_extra")
# One lock for every process that creates or drops partitions (any constant would do).
_PARTITION_LOCK = 7_210_001


def _partition_name(table: str, start: float, interval_s: int) -> str:
    moment = datetime.fromtimestamp(start, UTC)
    suffix = (
        moment.strftime("%Y%m%d") if interval_s % 86400 == 0 else moment.strftime("%Y%m%dt%H%M")
    )
    return f"{table}_p{suffix}"


def read_interval(conn: psycopg.Connection[TupleRow]) -> int:
    row = conn.execute(
        "SELECT value FROM storage_settings WHERE name = 'partition_interval'"
    ).fetchone()
    return int(str(row[0]).split()[0]) if row else 86400


@dataclass
class PartitionSet:
    """The partitions known to exist; asks the database only about ones it has not seen."""

    interval_s: int = 86400
    known: set[int] = field(default_factory=set)  # partition numbers: start // interval_s

    def load(self, conn: psycopg.Connection[TupleRow]) -> None:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass"
        ).fetchall()
        self.known = set()
        for (name,) in rows:
            suffix = str(name).removeprefix("readings_p")
            fmt = "%Y%m%dt%H%M" if "t" in suffix else "%Y%m%d"
            try:
                start = datetime.strptime(suffix, fmt).replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue  # not one of ours (a DBA's DEFAULT partition, say): leave it alone
            self.known.add(int(start // self.interval_s))

    def missing(self, times: Sequence[float]) -> set[int]:
        if not times:
            return set()
        interval = self.interval_s
        known = self.known
        low, high = int(min(times) // interval), int(max(times) // interval)
        # The usual batch spans one or two partitions that exist: two comparisons a batch
        # instead of a set over every time.
        if high - low < 64 and all(n in known for n in range(low, high + 1)):
            return set()
        return {n for n in {int(t // interval) for t in times} if n not in known}

    def ensure(self, conn: psycopg.Connection[TupleRow], numbers: set[int]) -> None:
        """Create the partitions numbered ``numbers`` in the caller's transaction.

        Call it before the transaction touches ``readings``: creating a partition locks the
        parent, and a writer holding the parent while waiting for this lock would deadlock.
        """
        if not numbers:
            return
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        for number in sorted(numbers):
            start = number * self.interval_s
            for table in PARTITIONED_TABLES:
                name = _partition_name(table, start, self.interval_s)
                # DDL takes no bind parameters; both bounds are integers computed here.
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES "
                    f"FROM (to_timestamp({start})) TO (to_timestamp({start + self.interval_s}))"
                )
                _give_to_parent_owner(conn, table, name)
            self.known.add(number)


def _give_to_parent_owner(conn: psycopg.Connection[TupleRow], table: str, name: str) -> None:
    """A partition its creator made for another role's table becomes that role's, so that
    role can drop it later: the schema's owner migrating (a member of the ingestion role, which
    owns the readings tables) where no superuser's event trigger does it (migration 0006)."""
    row = conn.execute(
        "SELECT pg_get_userbyid(p.relowner) FROM pg_class c JOIN pg_class p "
        "ON p.oid = %s::regclass WHERE c.oid = %s::regclass AND c.relowner <> p.relowner "
        "AND pg_get_userbyid(c.relowner) = current_user",
        (table, name),
    ).fetchone()
    if row is not None:
        owner = sql.Identifier(row[0])
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(name), owner))


@dataclass(frozen=True, slots=True)
class MaintenanceResult:
    created: int
    dropped: tuple[str, ...]


def maintain(
    url: str, now: float | None = None, ahead: int = 7, retention_s: int | None = None
) -> MaintenanceResult:
    """Create partitions from one interval back to ``ahead`` intervals on; drop those past
    every retention policy (``retention_s`` overrides the longest raw retention)."""
    now = _time.time() if now is None else now
    with psycopg.connect(libpq_url(url)) as conn:
        partitions = PartitionSet(read_interval(conn))
        partitions.load(conn)
        current = int(now // partitions.interval_s)
        wanted = set(range(current - 1, current + ahead + 1))
        missing = wanted - partitions.known
        partitions.ensure(conn, missing)
        if retention_s is None:
            from .retention import policies  # retention drops partitions through this module

            kept = longest_raw(policies(conn).values())
            retention_s = int(kept.total_seconds())
        dropped = drop_expired(conn, now - retention_s, partitions=partitions)
        return MaintenanceResult(created=len(missing), dropped=dropped)


def drop_expired(
    conn: psycopg.Connection[TupleRow],
    before: float,
    *,
    dry_run: bool = False,
    partitions: PartitionSet | None = None,
) -> tuple[str, ...]:
    """Drop (or, ``dry_run``, name) the partitions of both tables that end at or before
    ``before`` (epoch seconds); commits."""
    if partitions is None:
        partitions = PartitionSet(read_interval(conn))
        partitions.load(conn)
    dropped = []
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
    for number in sorted(partitions.known):
        end = (number + 1) * partitions.interval_s
        if end <= before:
            for table in PARTITIONED_TABLES:
                name = _partition_name(table, number * partitions.interval_s, partitions.interval_s)
                if not dry_run:
                    conn.execute(f"DROP TABLE IF EXISTS {name}")
                dropped.append(name)
            if not dry_run:
                partitions.known.discard(number)
    conn.commit()
    return tuple(dropped)
