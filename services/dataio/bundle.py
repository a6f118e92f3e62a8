"""An open-data bundle: the period's readings (at the level the settings allow) and KPI values as
files, and their DCAT-AP description (``dcat.jsonld``) beside them, ready for a CKAN portal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from services.kpi.catalog import KPIS

from . import dcat, exporter
from .exporter import Level, OutputFormat, Rollup, Selection

Conn = psycopg.Connection[TupleRow]


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    size: int
    sha256: str


def spatial(conn: Conn, district: str | None) -> tuple[list[str], dcat.BBox | None]:
    """The districts' names and the bounding box of their sensors (west, south, east, north)."""
    names = [
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM districts WHERE %(d)s::text IS NULL OR id = %(d)s ORDER BY id",
            {"d": district},
        ).fetchall()
    ]
    row = conn.execute(
        "SELECT min(longitude), min(latitude), max(longitude), max(latitude) FROM sensors "
        "WHERE (%(d)s::text IS NULL OR district_id = %(d)s) AND latitude IS NOT NULL "
        "AND longitude IS NOT NULL",
        {"d": district},
    ).fetchone()
    if row is None or any(v is None for v in row):
        return names, None
    west, south, east, north = (float(v) for v in row)
    return names, (west, south, east, north)


def write_file(path: Path, chunks: Iterator[bytes]) -> Written:
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return Written(path, size, digest.hexdigest())


def build(
    conn: Conn,
    directory: Path,
    selection: Selection,
    *,
    sensor_level: str,
    title: str,
    publisher: str,
    licence: str,
    fmt: OutputFormat = OutputFormat.CSV,
    rollup: Rollup = Rollup.HOUR,
    base_url: str = "",
) -> dict[str, Any]:
    """Write the bundle into ``directory`` (made if missing); return its DCAT-AP description.

    ``sensor_level`` (URBANPULSE_OPEN_DATA_SENSOR_LEVEL): "sensor", "district" or "omit".
    ``base_url`` prefixes the files' names in the description (empty: relative names)."""
    selection.check()
    directory.mkdir(parents=True, exist_ok=True)
    distributions: list[dcat.Distribution] = []
    media = exporter.MEDIA_TYPES[fmt]
    if sensor_level != "omit":
        level = Level(sensor_level)
        written = write_file(
            directory / f"readings.{fmt.value}",
            exporter.readings_file(conn, selection, rollup, level, fmt),
        )
        conn.commit()  # the server-side cursor's transaction (Parquet)
        distributions.append(
            dcat.Distribution(
                f"Readings per {rollup.value} ({level.value} level)",
                base_url + written.path.name,
                media,
                written.size,
                written.sha256,
                "count, mean, min and max per bucket"
                + (" and sensor" if level is Level.SENSOR else ", district and quantity"),
            )
        )
    written = write_file(
        directory / f"kpis.{fmt.value}",
        exporter.encode(exporter.kpi_rows(conn, selection), exporter.KPI_COLUMNS, fmt),
    )
    conn.commit()
    distributions.append(
        dcat.Distribution(
            "KPI values with rating, coverage and baseline",
            base_url + written.path.name,
            media,
            written.size,
            written.sha256,
        )
    )
    names, bbox = spatial(conn, selection.district)
    conn.commit()
    domains = (
        [selection.domain] if selection.domain else sorted({k.domain.value for k in KPIS.values()})
    )
    identifier = hashlib.sha256(
        f"{selection.start.isoformat()}|{selection.end.isoformat()}|{selection.district}|"
        f"{selection.domain}".encode()
    ).hexdigest()[:16]
    description = dcat.describe(
        dcat.Bundle(
            identifier=identifier,
            title=title,
            description=(
                f"Sensor readings and KPI values of {', '.join(names) or 'the city'} from "
                f"{selection.start.date()} to {selection.end.date()}"
                + (f", domain {selection.domain}" if selection.domain else "")
                + "."
            ),
            publisher=publisher,
            licence=licence,
            start=selection.start,
            end=selection.end,
            districts=names,
            domains=domains,
            bbox=bbox,
            distributions=distributions,
        )
    )
    (directory / "dcat.jsonld").write_text(json.dumps(description, indent=2) + "\n")
    return description
