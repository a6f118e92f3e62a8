"""Every statement the registry makes on its tables: districts, gateways and sensors.

The API's routes, the manifest load and the ingestion worker call these; none of them spells
SQL for a registry table. Column names come from the schema (``services.storage.schema``), not
from a request or response model: a name that is no column of the table, or a column the
registry maintains itself, is refused here (ValueError) before any SQL is built, so a model
that drifted from the schema fails loudly. Reads answer dicts keyed by column; writes take them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import JSONB

from .. import schema

# The API's pool hands out Connection[TupleRow], the worker Connection[tuple[object, ...]].
Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class RegistryTable:
    """One registry table: ``what`` one of its rows is called in messages, the columns a
    listing's ``q`` searches, the columns no read shows unless asked (``hidden``) and those the
    registry maintains itself, which no row sets (``maintained``)."""

    table: Table
    what: str
    searched: tuple[str, ...] = ("id",)
    hidden: frozenset[str] = frozenset()
    maintained: frozenset[str] = frozenset({"created_at"})

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """The columns a read answers, in the schema's order."""
        return tuple(c.name for c in self.table.columns if c.name not in self.hidden)

    @cached_property
    def writable(self) -> frozenset[str]:
        """The columns a row sets: the fields of the table's row model."""
        return frozenset(c.name for c in self.table.columns) - self.hidden - self.maintained

    @cached_property
    def _json(self) -> frozenset[str]:
        return frozenset(c.name for c in self.table.columns if isinstance(c.type, JSONB))

    def find(
        self,
        conn: Conn,
        *,
        equal: Mapping[str, Any] | None = None,
        q: str | None = None,
        after: str | None = None,
        limit: int = 1,
        columns: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows by id whose columns equal ``equal``'s values (None: any), whose searched
        columns hold ``q`` (any case), after the id ``after``; at most ``limit``."""
        wanted = {c: v for c, v in (equal or {}).items() if v is not None}
        self._check(wanted, self.columns)
        where: list[sql.Composable] = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in wanted]
        params: list[Any] = list(wanted.values())
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                sql.SQL("({})").format(
                    sql.SQL(" OR ").join(
                        sql.SQL("{} ILIKE %s").format(sql.Identifier(c)) for c in self.searched
                    )
                )
            )
            params.extend([pattern] * len(self.searched))
        if after is not None:
            where.append(sql.SQL("id > %s"))
            params.append(after)
        shown = self.columns if columns is None else columns
        self._check(shown, self._all)
        query = sql.SQL("SELECT {} FROM {} {} ORDER BY id LIMIT %s").format(
            sql.SQL(", ").join(map(sql.Identifier, shown)),
            sql.Identifier(self.table.name),
            sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        )
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, [*params, limit]).fetchall()

    def get(
        self, conn: Conn, key: str, columns: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """The row whose id is ``key`` (its ``columns``, else the shown ones), or None."""
        rows = self.find(conn, equal={"id": key}, columns=columns)
        return rows[0] if rows else None

    def known(self, conn: Conn, keys: Collection[str]) -> set[str]:
        """Those of ``keys`` that are ids of rows (one query, even for no keys)."""
        query = sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(
            sql.Identifier(self.table.name)
        )
        return {row[0] for row in conn.execute(query, (list(keys),))}

    def insert(self, conn: Conn, values: Mapping[str, Any]) -> bool:
        """Add the row ``values`` (column -> value); False, adding nothing, if its id is taken."""
        cursor = conn.execute(
            self._insert(values) + sql.SQL(" ON CONFLICT (id) DO NOTHING"), self._adapt(values)
        )
        return cursor.rowcount > 0

    def upsert(self, conn: Conn, values: Mapping[str, Any]) -> None:
        """Add the row ``values``, or set those columns of the row with its id."""
        changed = [c for c in values if c != "id"]
        query = self._insert(values) + sql.SQL(" ON CONFLICT (id) DO UPDATE SET {}").format(
            sql.SQL(", ").join(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in changed
            )
        )
        conn.execute(query, self._adapt(values))

    def update(self, conn: Conn, key: str, values: Mapping[str, Any]) -> None:
        """Set the columns ``values`` names of the row whose id is ``key``."""
        if not values:
            return
        self._check(values, self.writable)
        query = sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
            sql.Identifier(self.table.name),
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values),
        )
        conn.execute(query, [*self._adapt(values), key])

    @cached_property
    def _all(self) -> frozenset[str]:
        return frozenset(c.name for c in self.table.columns)

    def _insert(self, values: Mapping[str, Any]) -> sql.Composed:
        self._check(values, self.writable)
        return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(self.table.name),
            sql.SQL(", ").join(map(sql.Identifier, values)),
            sql.SQL(", ").join(sql.Placeholder() * len(values)),
        )

    def _adapt(self, values: Mapping[str, Any]) -> list[Any]:
        return [
            Jsonb(value) if column in self._json and value is not None else value
            for column, value in values.items()
        ]

    def _check(self, columns: Iterable[str], allowed: Collection[str]) -> None:
        refused = [c for c in columns if c not in allowed]
        if refused:
            raise ValueError(f"not a column {self.what}s may name here: {', '.join(refused)}")


districts = RegistryTable(schema.districts, "district", searched=("id", "name"))
gateways = RegistryTable(
    schema.gateways,
    "gateway",
    # Set by the gateways' status messages (record_gateway_status) and by retiring.
    maintained=frozenset({"online", "last_seen", "status", "created_at"}),
)
sensors = RegistryTable(
    schema.sensors,
    "sensor",
    # The readings' integer key: internal, asked for by name.
    hidden=frozenset({"key"}),
    maintained=frozenset({"retired_at", "created_at"}),
)

# The references a registry row may hold: column -> the table whose id it names.
REFERENCES: Mapping[str, RegistryTable] = {"district_id": districts, "gateway_id": gateways}


def unknown_references(
    conn: Conn,
    rows: Sequence[Mapping[str, Any]],
    also_known: Mapping[str, Collection[str]] | None = None,
) -> list[tuple[int, str, str]]:
    """``(index, column, reason)`` for each reference of ``rows[index]`` to a district or
    gateway that is not registered, nor among ``also_known[column]`` (ids registered with the
    rows); one query per table."""
    extra = also_known or {}
    known = {
        column: set(extra.get(column, ()))
        | table.known(
            conn,
            {row[column] for row in rows if row.get(column) is not None}
            - set(extra.get(column, ())),
        )
        for column, table in REFERENCES.items()
    }
    return [
        (index, column, f"unknown {table.what} {row[column]!r}")
        for index, row in enumerate(rows)
        for column, table in REFERENCES.items()
        if row.get(column) is not None and row[column] not in known[column]
    ]


def retire_sensor(conn: Conn, sensor_id: str) -> None:
    """Mark the sensor retired, with the time of its first retirement."""
    conn.execute(
        "UPDATE sensors SET status = 'retired', retired_at = coalesce(retired_at, now()) "
        "WHERE id = %s",
        (sensor_id,),
    )


def retire_gateway(conn: Conn, gateway_id: str) -> int:
    """Mark the gateway retired unless sensors that are not retired hang off it; answer how
    many do (0: retired)."""
    attached = conn.execute(
        "SELECT count(*) FROM sensors WHERE gateway_id = %s AND status <> 'retired'",
        (gateway_id,),
    ).fetchone()
    if attached and attached[0]:
        return int(attached[0])
    conn.execute("UPDATE gateways SET status = 'retired' WHERE id = %s", (gateway_id,))
    return 0


def add_pending_sensors(conn: Conn, pending: Iterable[tuple[str, str]]) -> None:
    """Register each ``(sensor id, gateway id)`` not registered yet as a pending sensor of
    unknown kind (an engineer completes it); its gateway only if registered: an unknown
    gateway must not fail the ingestion batch this comes with."""
    for sensor_id, gateway_id in pending:
        conn.execute(
            "INSERT INTO sensors (id, kind, domain, gateway_id, status) "
            "SELECT %s, 'unknown', 'unknown', (SELECT id FROM gateways WHERE id = %s), "
            "'pending' ON CONFLICT (id) DO NOTHING",
            (sensor_id, gateway_id),
        )


def record_gateway_status(conn: Conn, status: Iterable[tuple[str, bool, bool]]) -> None:
    """Set each ``(gateway id, online, seen now)``: online or not, and seen at this instant
    when ``seen now`` (False for a broker's retained copy, its memory of the gateway)."""
    for gateway_id, online, seen_now in status:
        conn.execute(
            "UPDATE gateways SET online = %s, "
            "last_seen = CASE WHEN %s THEN now() ELSE last_seen END WHERE id = %s",
            (online, seen_now, gateway_id),
        )
