"""Open-data export against the real database, in both storage modes: readings at a rollup per
sensor and per district, KPI values, each format read back by an independent reader, the
server-side cursor, and the DCAT-AP bundle with the sensor-level setting."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from services.dataio import bundle, exporter
from services.dataio.exporter import ExportError, Level, OutputFormat, Rollup, Selection
from services.storage.urls import libpq_url

from .conftest import DAY0, HOURS, SENSORS, Conn, voltage

ROOT = Path(__file__).resolve().parents[3]
PERIOD = Selection(DAY0, DAY0 + timedelta(hours=HOURS))


def _decode(data: bytes, fmt: OutputFormat) -> list[dict[str, Any]]:
    """Rows as dicts of text (CSV), JSON values, or Parquet values."""
    if fmt is OutputFormat.CSV:
        return list(csv.DictReader(io.StringIO(data.decode())))
    if fmt is OutputFormat.JSON:
        return list(json.loads(data))
    return list(pq.read_table(io.BytesIO(data)).to_pylist())


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_hourly_readings_per_sensor_in_each_format(history: Conn, fmt: OutputFormat) -> None:
    rows = exporter.readings(history, PERIOD, Rollup.HOUR, Level.SENSOR)
    data = b"".join(exporter.encode(rows, exporter.SENSOR_COLUMNS, fmt))
    history.commit()
    decoded = _decode(data, fmt)
    assert len(decoded) == HOURS * len(SENSORS)
    first = decoded[0]
    assert str(first["sensor"]) == "fdr-c1"
    assert (first["district"], first["quantity"], first["unit"]) == ("centre", "voltage", "V")
    for row in decoded:
        hour = _hour(row["time"])
        assert float(row["mean"]) == voltage(str(row["sensor"]), hour)
        assert int(row["count"]) == 1


def _hour(value: object) -> int:
    from datetime import datetime  # noqa: PLC0415

    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return int((moment - DAY0).total_seconds() // 3600)


def test_daily_readings_coarsened_per_district_name_no_sensor(history: Conn) -> None:
    rows = list(exporter.readings(history, PERIOD, Rollup.DAY, Level.DISTRICT))
    history.commit()
    by_key = {(r[0], r[1]): r for r in rows}
    assert len(rows) == 3 * 2  # three days, two districts
    day = by_key[(DAY0, "centre")]
    # (time, district, domain, quantity, unit, sensors, count, mean, min, max)
    expected = [voltage(s, h) for s in ("fdr-c1", "fdr-c2") for h in range(24)]
    assert day[2:7] == ("energy", "voltage", "V", 2, 48)
    assert day[7] == pytest.approx(sum(expected) / len(expected))
    assert (day[8], day[9]) == (min(expected), max(expected))
    data = b"".join(exporter.encode(rows, exporter.DISTRICT_COLUMNS, OutputFormat.CSV))
    assert b"fdr-" not in data


def test_filters_by_district_and_domain(history: Conn) -> None:
    north = Selection(PERIOD.start, PERIOD.end, district="north")
    assert {r[1] for r in exporter.readings(history, north, Rollup.HOUR, Level.SENSOR)} == {
        "fdr-n1"
    }
    history.commit()
    water = Selection(PERIOD.start, PERIOD.end, domain="water")
    assert list(exporter.readings(history, water, Rollup.RAW, Level.SENSOR)) == []
    history.commit()


def test_readings_come_through_a_server_side_cursor(history: Conn) -> None:
    rows = exporter.readings(history, PERIOD, Rollup.RAW, Level.SENSOR)
    assert next(rows)[1] == "fdr-c1"
    cursors = history.execute("SELECT name FROM pg_cursors").fetchall()
    assert ("urbanpulse_export",) in cursors
    assert sum(1 for _ in rows) == HOURS * len(SENSORS) - 1
    history.commit()


def test_a_bad_period_is_refused(history: Conn) -> None:
    with pytest.raises(ExportError, match="before end"):
        list(
            exporter.readings(
                history, Selection(PERIOD.end, PERIOD.start), Rollup.HOUR, Level.SENSOR
            )
        )
    with pytest.raises(ExportError, match="no KPI of domain"):
        list(exporter.kpi_rows(history, Selection(PERIOD.start, PERIOD.end, domain="weather")))


def test_kpi_values_with_rating_coverage_and_baseline(history: Conn) -> None:
    rows = list(
        exporter.kpi_rows(history, Selection(PERIOD.start, PERIOD.end, "centre", "energy"), "day")
    )
    history.commit()
    assert rows
    names = [name for name, _ in exporter.KPI_COLUMNS]
    items = [dict(zip(names, r, strict=True)) for r in rows]
    assert {i["domain"] for i in items} == {"energy"}
    assert {i["scope"] for i in items} == {"centre"}
    assert {i["period_start"] for i in items} == {DAY0 + timedelta(days=d) for d in range(3)}
    for item in items:
        assert item["rating"] in {"met", "warning", "missed", "insufficient_data"}
        assert 0.0 <= item["coverage_ratio"] <= 1.0
        assert item["baseline_value"] is None  # none recorded
    data = b"".join(exporter.encode(rows, exporter.KPI_COLUMNS, OutputFormat.PARQUET))
    assert pq.read_table(io.BytesIO(data)).num_rows == len(rows)


@pytest.mark.parametrize("level", ["sensor", "district", "omit"])
def test_bundle_files_and_dcat_description(history: Conn, tmp_path: Path, level: str) -> None:
    description = bundle.build(
        history,
        tmp_path,
        PERIOD,
        sensor_level=level,
        title="Test city open data",
        publisher="Test city",
        licence="http://creativecommons.org/licenses/by/4.0/",
    )
    assert json.loads((tmp_path / "dcat.jsonld").read_text()) == description
    assert description["@type"] == "dcat:Dataset"
    assert description["dct:title"] == "Test city open data"
    assert description["dct:license"] == {"@id": "http://creativecommons.org/licenses/by/4.0/"}
    temporal = description["dct:temporal"]
    assert temporal["dcat:startDate"]["@value"] == DAY0.isoformat()
    spatial = description["dct:spatial"]
    assert spatial["locn:geographicName"] == "Centre, North"
    polygon = json.loads(spatial["dcat:bbox"]["@value"])
    assert polygon["coordinates"][0][0] == [7.66, 45.07]
    files = {d["dcat:downloadURL"]["@id"]: d for d in description["dcat:distribution"]}
    expected = {"kpis.csv"} | (set() if level == "omit" else {"readings.csv"})
    assert set(files) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*expected, "dcat.jsonld"])
    for name, item in files.items():
        data = (tmp_path / name).read_bytes()
        assert item["spdx:checksum"]["spdx:checksumValue"] == hashlib.sha256(data).hexdigest()
        assert item["dcat:byteSize"]["@value"] == str(len(data))
        assert item["dcat:mediaType"] == "text/csv"
    if level != "omit":
        readings = (tmp_path / "readings.csv").read_text()
        assert ("fdr-c1" in readings) is (level == "sensor")


def test_the_export_cli_writes_parquet(history: Conn, database_url: str, tmp_path: Path) -> None:
    output = tmp_path / "readings.parquet"
    command = [
        sys.executable, "-m", "services.cli", "export", "readings",
        "--start", PERIOD.start.isoformat(), "--end", PERIOD.end.isoformat(),
        "--rollup", "1d", "--level", "district", "--format", "parquet", "-o", str(output),
        "--database-url", libpq_url(database_url),
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    table = pq.read_table(output)
    assert table.num_rows == 6
    assert "sensor" not in table.column_names


# Text PostgreSQL and Python write differently: quoting, escapes, bytes past ASCII, floats past
# 1e15 and whole ones, NaN, negative zero, sub-second times, nulls and empty strings.
TRICKY_SENSORS = {
    "tr,comma": "tr,district",
    'tr"quote': 'tr"district',
    "tr\rreturn": "naïve µ",
    "tr\nnewline": None,
    "tr~tilde\x01ctl\x7fdel": "tr\\back",
    "tr-😀": "tr\rreturn",
}
# "µ" (and "³") recur inside the longer run "µ³".
TRICKY_UNITS = {
    "tr_micro": "µg/m³",
    "tr_run": "µ³",
    "tr_comma": "a,b",
    "tr_quote": 'q"u',
    "tr_empty": "",
}
TRICKY_VALUES = [
    *(float(v) for v in ("nan", "inf", "-inf")),
    -0.0, 0.0, 100.0, 0.1, 1 / 3, 1e-7, 5e-324, 123456789012345.6, 1e15, 1.5e16,
    2.0**53 + 2, 6.429560891534334e16, -1.7976931348623157e308,
]  # fmt: skip


@pytest.fixture
def tricky(history: Conn) -> Conn:
    for district in {d for d in TRICKY_SENSORS.values() if d}:
        history.execute("INSERT INTO districts (id, name) VALUES (%s, %s)", (district, district))
    keys = [
        history.execute(
            "INSERT INTO sensors (id, kind, domain, district_id) "
            "VALUES (%s, 'air_quality', 'environment', %s) RETURNING key",
            (sensor, district),
        ).fetchone()
        for sensor, district in TRICKY_SENSORS.items()
    ]
    for number, (name, unit) in enumerate(TRICKY_UNITS.items()):
        history.execute(
            "INSERT INTO quantities (key, name, unit) VALUES (%s, %s, %s)",
            (900 + number, name, unit),
        )
    moments = [DAY0 + timedelta(seconds=1.5), DAY0 + timedelta(microseconds=1), DAY0]
    rows = [
        (moments[i % 3] + timedelta(minutes=i % 7), key[0], 900 + i % len(TRICKY_UNITS), value)
        for i, (key, value) in enumerate(
            (key, value) for key in keys if key is not None for value in TRICKY_VALUES
        )
    ]
    with history.cursor().copy(
        "COPY readings (time, sensor_key, quantity_key, value) FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row(row)
    history.commit()
    return history


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns"])
@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("fmt", [OutputFormat.CSV, OutputFormat.JSON])
def test_postgresql_writes_the_file_the_row_encoder_wrote(
    tricky: Conn, monkeypatch: pytest.MonkeyPatch, zone: str, level: Level, fmt: OutputFormat
) -> None:
    tricky.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
    tricky.commit()
    # Rows across several chunks, and a row a chunk: one value to correct, alone in its chunk.
    for rollup, rows_per_chunk in ((Rollup.RAW, 7), (Rollup.RAW, 1), (Rollup.HOUR, 7)):
        monkeypatch.setattr(exporter, "_ROWS_PER_CHUNK", rows_per_chunk)
        rows = exporter.readings(tricky, PERIOD, rollup, level)
        expected = b"".join(exporter.encode(rows, exporter.reading_columns(level), fmt))
        tricky.commit()
        copied = exporter.copied(tricky, PERIOD, rollup, level, fmt)
        assert b"".join(copied).decode() == expected.decode()
        # What the file was made of: each tricky value was there to be written.
        if rollup is Rollup.RAW and level is Level.SENSOR:
            text = expected.decode()
            written = [repr(v) for v in TRICKY_VALUES if math.isfinite(v)]
            assert all(value in text for value in written)
            assert ".500000" in text
            assert ".000001" in text
            assert '"tr,comma"' in text
            assert ("µg/m³" if fmt is OutputFormat.CSV else "\\u00b5g/m\\u00b3") in text


def test_an_export_stopped_midway_leaves_the_connection_ready(history: Conn) -> None:
    history.commit()
    chunks = exporter.copied(history, PERIOD, Rollup.RAW, Level.SENSOR, OutputFormat.CSV)
    assert next(chunks).startswith(b"time,sensor,")
    chunks.close()
    # The connection is usable at once: no COPY left running, no transaction left open.
    assert history.execute("SELECT 1").fetchone() == (1,)
    assert history.info.transaction_status.name == "INTRANS"  # the SELECT's, not the COPY's


@pytest.mark.parametrize("distinct", [3, 60])
def test_json_escaping_matches_json_dumps_with_few_or_many_distinct_runs(distinct: int) -> None:
    # Few distinct non-ASCII runs (units) are replaced run by run, many (names in Greek and
    # CJK) in one scan (review: a scan a run cost 60x on such names); both as json.dumps.
    words = [chr(0x391 + i % distinct) + chr(0x4E00 + i % distinct) + "\x7f µ³" for i in range(200)]
    block = "".join(json.dumps({"w": w}, ensure_ascii=False) + "\n" for w in words).encode()
    expected = "".join(json.dumps({"w": w}) + "\n" for w in words).encode()
    assert exporter._json_exact(block) == expected
