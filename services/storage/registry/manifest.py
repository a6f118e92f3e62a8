"""Bulk registration: districts, gateways and sensors from a manifest, all or nothing.

The manifest is what ``urbanpulse simulate --manifest-out`` writes and what a field engineer
prepares: ``{"districts": [...], "gateways": [...], "sensors": [...]}`` whose keys are the
registry's column names. Every row is checked (kind known, domain matching the kind, ids in the
wire contract's alphabet, references resolvable); one bad row refuses the whole load and every
bad row is reported with its section, index and reason. Loading the same manifest again changes
nothing (rows are upserted by id). ``parse`` is pure; ``load`` writes through ``.tables``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pydantic import ValidationError

from gateway.kinds import KINDS

from ..errors import StorageError
from . import tables
from .fields import DistrictRow, GatewayRow, Row, SensorRow


@dataclass(frozen=True, slots=True)
class RowError:
    section: str
    index: int
    field: str | None
    message: str

    @property
    def where(self) -> str:
        """``section[index]``, with ``.field`` when one field is at fault."""
        return f"{self.section}[{self.index}]" + (f".{self.field}" if self.field else "")

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ManifestError(StorageError):
    """The manifest was refused; ``errors`` lists every bad row. The API answers it with a 422
    listing each row's field as a bad input, and the rows as the member ``rows``."""

    status = 422

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} bad row(s); nothing was loaded")
        self.errors = errors

    def request_fields(self) -> list[tuple[str, str]]:
        return [(e.where, e.message) for e in self.errors]

    @property
    def fields_detail(self) -> str:
        return f"{len(self.errors)} bad row(s); nothing was registered"

    def extensions(self) -> dict[str, Any]:
        return {
            "rows": [
                {"section": e.section, "index": e.index, "field": e.field, "message": e.message}
                for e in self.errors
            ]
        }


@dataclass(slots=True)
class LoadResult:
    districts: int = 0
    gateways: int = 0
    sensors: int = 0
    errors: list[RowError] = field(default_factory=list)


_SECTIONS: dict[str, type[Row]] = {
    "districts": DistrictRow,
    "gateways": GatewayRow,
    "sensors": SensorRow,
}


def parse(manifest: Any) -> tuple[list[DistrictRow], list[GatewayRow], list[SensorRow]]:
    """Check every row; raise ManifestError listing all the bad ones."""
    errors: list[RowError] = []
    if not isinstance(manifest, dict):
        raise ManifestError([RowError("manifest", 0, None, "must be a JSON object")])
    unknown = set(manifest) - set(_SECTIONS)
    errors.extend(RowError(name, 0, None, "unknown section") for name in sorted(unknown))
    parsed: dict[str, list[Any]] = {}
    for section, model in _SECTIONS.items():
        rows = manifest.get(section, [])
        if not isinstance(rows, list):
            errors.append(RowError(section, 0, None, "must be a list"))
            continue
        parsed[section] = []
        for index, row in enumerate(rows):
            try:
                parsed[section].append(model.model_validate(row))
            except ValidationError as exc:
                errors.extend(
                    RowError(section, index, ".".join(map(str, e["loc"])) or None, e["msg"])
                    for e in exc.errors()
                )
    for index, sensor in enumerate(parsed.get("sensors", [])):
        kind = KINDS.get(sensor.kind)
        if kind is not None and sensor.domain not in (None, kind.domain.value):
            errors.append(
                RowError(
                    "sensors",
                    index,
                    "domain",
                    f"a {sensor.kind} is in the {kind.domain.value} domain",
                )
            )
    _check_duplicates(parsed, errors)
    if errors:
        raise ManifestError(errors)
    return parsed["districts"], parsed["gateways"], parsed["sensors"]


def _check_duplicates(parsed: dict[str, list[Any]], errors: list[RowError]) -> None:
    for section, rows in parsed.items():
        seen: set[str] = set()
        for index, row in enumerate(rows):
            if row.id in seen:
                errors.append(RowError(section, index, "id", f"{row.id!r} appears twice"))
            seen.add(row.id)


def load(conn: psycopg.Connection[Any], manifest: Any) -> LoadResult:
    """Upsert the manifest's rows in the caller's transaction, all or none: the caller
    commits (or, for a dry run, rolls back)."""
    districts, gateways, sensors = parse(manifest)
    errors = _check_references(conn, districts, gateways, sensors)
    if errors:
        raise ManifestError(errors)
    # The reference check's queries opened the caller's transaction (always: the connection is
    # not in autocommit), so this block is a savepoint in it, not a transaction committed here.
    with conn.transaction():
        for d in districts:
            tables.districts.upsert(conn, d.model_dump())
        for g in gateways:
            tables.gateways.upsert(conn, g.model_dump())
        for s in sensors:
            kind = KINDS[s.kind]
            values = s.model_dump()
            values["domain"] = kind.domain.value
            values["interval_s"] = s.interval_s or kind.interval_s
            tables.sensors.upsert(conn, values)
    return LoadResult(len(districts), len(gateways), len(sensors))


def _check_references(
    conn: psycopg.Connection[Any],
    districts: list[DistrictRow],
    gateways: list[GatewayRow],
    sensors: list[SensorRow],
) -> list[RowError]:
    # A row may name a district or gateway the same manifest registers.
    also_known = {"district_id": {d.id for d in districts}, "gateway_id": {g.id for g in gateways}}
    return [
        RowError(section, index, column, reason)
        for section, rows in (("gateways", gateways), ("sensors", sensors))
        for index, column, reason in tables.unknown_references(
            conn,
            [row.model_dump(include={"district_id", "gateway_id"}) for row in rows],
            also_known,
        )
    ]


def read_manifest(text: str) -> Any:
    """The manifest in ``text`` (JSON); ManifestError if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError([RowError("manifest", 0, None, f"not JSON: {exc}")]) from None
