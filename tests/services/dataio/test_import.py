"""History import against the real database, in both storage modes: CSV (and a mapped layout),
JSON lines of SenML packs and Parquet through the live validation; bad records quarantined with
their file and line; an import run twice stores once; an interrupted import resumed loses and
doubles nothing (stopped between batches in process, and killed as a process); rollups follow.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from typer.testing import CliRunner

from gateway.senml import Record, encode_resolved
from services.cli import app as cli
from services.dataio import importer
from services.dataio.sources import Format, SourceError, parse_mapping, units
from services.ingest import quarantine
from services.ingest.validate import Policy
from services.storage import quarantine as quarantine_table
from services.storage.quarantine import QuarantineFilter
from services.storage.urls import libpq_url

ROOT = Path(__file__).resolve().parents[3]
Conn = psycopg.Connection[tuple[object, ...]]
# A day's margin inside the default retention (400 days): a year of history is accepted.
YEAR_START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=370)
POLICY = Policy(max_future_s=10.0, max_age_s=400 * 86400.0)
# The year tests import the 365 days that ended 15 days ago: inside the retention (TimescaleDB's
# retention policy drops older chunks, whatever an import accepts). Their current KPI values
# are left to the monitor (kpis=False): on TimescaleDB that refresh takes minutes over a year.
HISTORY_START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
    days=380
)
LONG_POLICY = POLICY


@pytest.fixture
def city(db: Conn) -> Conn:
    """Feeder meters fdr-0 and fdr-1 behind gateway gw-a, in district centre."""
    db.execute("INSERT INTO districts (id, name) VALUES ('centre', 'Centre')")
    db.execute("INSERT INTO gateways (id, district_id) VALUES ('gw-a', 'centre')")
    for sensor in ("fdr-0", "fdr-1"):
        db.execute(
            "INSERT INTO sensors (id, kind, domain, gateway_id, district_id) "
            "VALUES (%s, 'feeder_meter', 'energy', 'gw-a', 'centre')",
            (sensor,),
        )
    db.commit()
    return db


def _csv(
    rows: Sequence[tuple[object, ...]], header: str = "sensor,quantity,time,value,unit"
) -> bytes:
    lines = [header, *(",".join(str(c) for c in row) for row in rows)]
    return ("\n".join(lines) + "\n").encode()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _count(conn: Conn, sql: str, params: tuple[object, ...] = ()) -> int:
    row = conn.execute(sql, params).fetchone()
    conn.commit()
    assert row is not None
    return int(str(row[0]))


def _import(
    conn: Conn, data: bytes, fmt: Format, policy: Policy = POLICY, **options: object
) -> importer.ImportResult:
    return importer.import_file(
        conn,
        io.BytesIO(data),
        fmt,
        source=f"test.{fmt.value}",
        policy=policy,
        **options,  # type: ignore[arg-type]
    )


def test_csv_good_and_bad_rows_counted_quarantined_with_file_and_line(city: Conn) -> None:
    t0 = YEAR_START
    data = _csv(
        [
            ("fdr-0", "voltage", _iso(t0), 230.5, "V"),
            ("fdr-0", "voltage", _iso(t0 + timedelta(minutes=1)), 231, ""),
            ("fdr-0", "power", _iso(t0 + timedelta(minutes=2)), 1.5, "kW"),  # converted
            ("ghost", "voltage", _iso(t0), 230, "V"),  # line 5: unknown sensor
            ("fdr-0", "voltage", _iso(t0 + timedelta(minutes=3)), 999, "V"),  # line 6: bounds
            ("fdr-0", "voltage", _iso(t0 + timedelta(minutes=4)), 230, "A"),  # line 7: unit
            ("fdr-0", "voltage", "yesterday", 230, "V"),  # line 8: not a time
            ("fdr-0", "voltage", _iso(t0 - timedelta(days=40)), 230, "V"),  # line 9: too old
            ("fdr-0", "humidity", _iso(t0), 50, "%RH"),  # line 10: not its quantity
            ("fdr-1", "voltage", str((t0 + timedelta(minutes=5)).timestamp()), 229, "V"),
        ]
    )
    result = _import(city, data, Format.CSV, now=(t0 + timedelta(days=370)).timestamp())
    assert (result.units, result.records, result.stored, result.duplicates) == (10, 10, 4, 0)
    assert result.quarantined == 6
    assert result.span == (t0, t0 + timedelta(minutes=5))
    stored = city.execute(
        "SELECT s.id, r.value FROM readings r JOIN sensors s ON s.key = r.sensor_key ORDER BY time"
    ).fetchall()
    assert stored == [("fdr-0", 230.5), ("fdr-0", 231.0), ("fdr-0", 1500.0), ("fdr-1", 229.0)]
    entries = city.execute(
        "SELECT q.topic, q.reason, q.detail, q.record_index, convert_from(m.payload, 'UTF8') "
        "FROM quarantine q JOIN quarantine_messages m ON m.id = q.message_id ORDER BY q.id"
    ).fetchall()
    city.commit()
    topics = [e[0] for e in entries]
    assert topics == [f"import:test.csv:{line}" for line in (5, 6, 7, 8, 9, 10)]
    reasons = [e[1] for e in entries]
    assert reasons == [
        "unknown_sensor",
        "out_of_range",
        "wrong_unit",
        "bad_row",
        "time_too_old",
        "unknown_quantity",
    ]
    assert all(
        str(e[2]).startswith(f"test.csv line {line}: ")
        for e, line in zip(entries, range(5, 11), strict=True)
    )
    # A row that became a record is kept as that record, a SenML pack (what a replay validates
    # again, its time resolved); one that did not, as its raw text.
    assert json.loads(str(entries[0][4])) == [
        {"n": "ghost/voltage", "t": t0.timestamp(), "u": "V", "v": 230.0}
    ]
    assert entries[3][4] == "fdr-0,voltage,yesterday,230,V"


def test_an_import_run_twice_stores_once_and_quarantines_once(city: Conn) -> None:
    t0 = YEAR_START
    data = _csv(
        [("fdr-0", "voltage", _iso(t0 + timedelta(minutes=i)), 230, "V") for i in range(50)]
        + [("ghost", "voltage", _iso(t0), 1, "V")]
    )
    first = _import(city, data, Format.CSV, batch_records=7)
    assert (first.stored, first.quarantined, first.batches) == (50, 1, 8)
    second = _import(city, data, Format.CSV, batch_records=7)
    assert second.already_done
    assert (second.stored, second.quarantined) == (0, 0)
    assert _count(city, "SELECT count(*) FROM readings") == 50
    assert _count(city, "SELECT count(*) FROM quarantine") == 1
    # --again runs it whole once more: every reading is found stored, nothing new.
    again = _import(city, data, Format.CSV, again=True)
    assert (again.stored, again.duplicates) == (0, 50)
    assert _count(city, "SELECT count(*) FROM readings") == 50


def test_a_value_stored_with_another_value_is_a_conflict_on_its_line(city: Conn) -> None:
    t0 = YEAR_START
    _import(city, _csv([("fdr-0", "voltage", _iso(t0), 230, "V")]), Format.CSV)
    other = _csv([("fdr-0", "voltage", _iso(t0 + timedelta(minutes=1)), 231, "V"),
                  ("fdr-0", "voltage", _iso(t0), 235, "V")])  # fmt: skip
    result = _import(city, other, Format.CSV)
    assert (result.stored, result.conflicts) == (1, 1)
    row = city.execute("SELECT topic, reason, detail FROM quarantine").fetchone()
    city.commit()
    assert row is not None
    assert row[:2] == ("import:test.csv:3", "conflict")
    assert _count(city, "SELECT count(*) FROM readings WHERE value = 230") == 1


def test_mapped_csv_layout(city: Conn) -> None:
    t0 = YEAR_START
    data = _csv([(_iso(t0), "fdr-1", 230.0, "voltage")], header="ts,device_id,reading,measure")
    mapping = parse_mapping("time=ts, sensor=device_id,value=reading,quantity=measure")
    result = _import(city, data, Format.CSV, mapping=mapping)
    assert result.stored == 1
    with pytest.raises(SourceError, match="no column 'sensor'"):
        _import(city, data, Format.CSV)
    with pytest.raises(SourceError, match="bad mapping"):
        parse_mapping("colour=red")


def test_jsonl_senml_packs_with_a_bad_record_and_a_bad_line(city: Conn) -> None:
    t0 = YEAR_START.timestamp()
    lines = [
        json.dumps([{"bn": "fdr-0/", "bt": t0, "n": "voltage", "u": "V", "v": 230},
                    {"n": "voltage", "t": 60, "v": 231}, {"n": "voltage", "t": 120, "v": 400}]),
        "",
        "not json",
        json.dumps([{"n": "fdr-1/voltage", "t": t0, "v": 229},
                    {"n": "fdr-1/voltage", "t": t0 + 60}]),
    ]  # fmt: skip
    result = _import(city, "\n".join(lines).encode(), Format.JSONL)
    assert result.stored == 3
    entries = city.execute(
        "SELECT topic, reason, record_index FROM quarantine ORDER BY topic, record_index"
    ).fetchall()
    city.commit()
    assert entries == [
        ("import:test.jsonl:1", "out_of_range", 2),
        ("import:test.jsonl:3", "not_senml", None),
        ("import:test.jsonl:4", "not_senml", 1),
    ]


def test_parquet_with_timestamps_and_epoch_seconds(city: Conn, tmp_path: Path) -> None:
    t0 = YEAR_START
    table = pa.table(
        {
            "sensor": ["fdr-0", "fdr-0", "fdr-1"],
            "quantity": ["voltage"] * 3,
            "time": pa.array([t0, t0 + timedelta(minutes=1), t0], pa.timestamp("us", tz="UTC")),
            "value": [230.0, 231.0, float("nan")],
        }
    )
    path = tmp_path / "history.parquet"
    pq.write_table(table, path)
    result = _import(city, path.read_bytes(), Format.PARQUET)
    assert (result.stored, result.quarantined) == (2, 1)
    row = city.execute("SELECT topic, reason FROM quarantine").fetchone()
    city.commit()
    assert row == ("import:test.parquet:3", "bad_row")


def test_not_parquet_and_empty_csv_are_refused_whole(city: Conn) -> None:
    with pytest.raises(SourceError, match="not a Parquet file"):
        list(units(io.BytesIO(b"sensor,quantity"), Format.PARQUET))
    with pytest.raises(SourceError, match="empty"):
        list(units(io.BytesIO(b""), Format.CSV))


def _year_of_one_sensor(every: timedelta = timedelta(minutes=10)) -> bytes:
    rows = []
    moment = HISTORY_START
    end = HISTORY_START + timedelta(days=365)
    i = 0
    while moment < end:
        rows.append(("fdr-0", "voltage", _iso(moment), 220 + i % 20, "V"))
        moment += every
        i += 1
    return _csv(rows)


class _Interrupted(Exception):
    pass


def test_a_year_interrupted_midway_and_resumed_loses_and_doubles_nothing(city: Conn) -> None:
    data = _year_of_one_sensor()
    expected = data.count(b"\n") - 1  # 52,560 readings
    done: list[int] = []

    def stop_after_three(line: int, _records: int) -> None:
        done.append(line)
        if len(done) == 3:
            raise _Interrupted  # Ctrl-C between two batches, after the third commit

    with pytest.raises(_Interrupted):
        _import(
            city,
            data,
            Format.CSV,
            LONG_POLICY,
            batch_records=5000,
            progress=stop_after_three,
            kpis=False,
        )
    city.rollback()
    assert _count(city, "SELECT count(*) FROM readings") == 15_000
    resumed = _import(city, data, Format.CSV, LONG_POLICY, batch_records=5000, kpis=False)
    assert not resumed.kpis_refreshed
    assert resumed.resumed_at == done[-1] == 15_001  # the header is line 1
    assert (resumed.stored, resumed.duplicates) == (expected - 15_000, 0)
    assert _count(city, "SELECT count(*) FROM readings") == expected
    assert resumed.totals["stored"] == expected
    # The rollups cover the year: a day's count is 144 ten-minute readings.
    assert _count(city, "SELECT count(*) FROM readings_1d WHERE count = 144") >= 364
    assert _count(city, "SELECT sum(count) FROM readings_1d") == expected


def test_a_killed_import_process_resumes(city: Conn, database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "year.csv"
    path.write_bytes(_year_of_one_sensor(timedelta(minutes=5)))
    expected = path.read_bytes().count(b"\n") - 1  # 105,120 readings
    command = [sys.executable, "-m", "services.cli", "import", str(path), "--batch", "2000",
               "--no-kpis", "--database-url", database_url, "--json"]  # fmt: skip
    env = {
        **os.environ,
        "URBANPULSE_ENV_FILE": "/nonexistent",
    }
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            position = city.execute("SELECT max(position) FROM import_runs").fetchone()
            city.commit()
            if position and position[0] and 0 < int(position[0]) < expected // 2:  # type: ignore[call-overload]
                break
            assert process.poll() is None, "the import finished before it could be killed"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    stored = _count(city, "SELECT count(*) FROM readings")
    assert 0 < stored < expected
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=True)
    result = json.loads(finished.stdout)
    assert result["resumed_at"] > 1
    assert result["duplicates"] == 0
    assert result["stored"] == expected - stored
    assert _count(city, "SELECT count(*) FROM readings") == expected
    assert _count(city, "SELECT count(DISTINCT time) FROM readings") == expected


def test_the_current_kpis_are_refreshed_when_the_span_reaches_this_year(city: Conn) -> None:
    now = datetime.now(UTC)
    data = _csv([("fdr-0", "voltage", _iso(now - timedelta(hours=1)), 230, "V")])
    result = _import(city, data, Format.CSV)
    assert result.kpis_refreshed
    assert _count(city, "SELECT count(*) FROM kpi_current") > 0
    # A span that ends before last year's end leaves the current values alone.
    assert importer.refresh_kpis(city, datetime(now.year - 1, 6, 1, tzinfo=UTC), now) is False


def test_the_cli_refuses_an_unknown_format_with_status_2(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "history.xlsx"
    path.write_bytes(b"")
    finished = subprocess.run(
        [sys.executable, "-m", "services.cli", "import", str(path), "--database-url",
         libpq_url(database_url)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert finished.returncode == 2
    assert "--format csv, jsonl or parquet" in finished.stderr


CASES = [
    ("fdr-0", "voltage", "2025-03-01T10:00:00Z", "230.5", "V"),
    ("fdr-0", "voltage", "2025-03-01T10:00:00+02:00", "231", ""),
    ("fdr-0", "power", "1740823200.5", "1.5", "kW"),
    ("fdr-0", "voltage", "2025-03-01 10:00:00", "-0", "V"),
    ("fdr-1", "voltage", "2025-03-01T10:00:00.123456Z", "1e2", "V"),
]


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Rome"])
def test_columnwise_and_row_by_row_conversion_agree(timezone: str) -> None:
    """The column-at-a-time path (pyarrow) makes the records the row-by-row path makes; a
    batch with one bad row goes row by row, so both are compared on the same rows."""
    good = _csv(list(CASES))
    fast = [u.record for u in units(io.BytesIO(good), Format.CSV, timezone=timezone)]
    slow = [
        u.record
        for u in units(io.BytesIO(_csv([*CASES, ("x", "y", "never", "1", "")])), Format.CSV,
                       timezone=timezone)
    ][:-1]  # fmt: skip
    assert fast == slow
    assert all(r is not None for r in fast)
    naive = datetime(2025, 3, 1, 10, tzinfo=ZoneInfo(timezone)).timestamp()
    assert fast[3] is not None
    assert fast[3].time == naive


def test_quoted_fields_blank_lines_and_bad_widths_keep_their_line_numbers(city: Conn) -> None:
    """Lines stop being rows once a quoted field holds a line break: the csv module takes over
    from the first quote, and every unit keeps the file's line number."""
    t0 = YEAR_START
    data = (
        "sensor,quantity,time,value,unit\n"
        f"fdr-0,voltage,{_iso(t0)},230,V\n"  # line 2
        "\n"  # line 3: blank
        f"fdr-0,voltage,{_iso(t0)},1,2,3\n"  # line 4: a value too many
        f'"ghost\nsensor",voltage,{_iso(t0)},230,V\n'  # lines 5-6: one row, quoted
        f"fdr-1,voltage,{_iso(t0)},231,V\n"  # line 7
        f"fdr-1,voltage,{_iso(t0 + timedelta(minutes=1))},232,V\n"  # line 8
    ).encode()
    found = [(u.line, u.error is None) for u in units(io.BytesIO(data), Format.CSV)]
    assert found == [(2, True), (4, False), (5, True), (7, True), (8, True)]
    result = _import(city, data, Format.CSV)
    assert (result.stored, result.quarantined) == (3, 2)
    topics = city.execute("SELECT topic, reason FROM quarantine ORDER BY id").fetchall()
    city.commit()
    assert topics == [("import:test.csv:4", "bad_row"), ("import:test.csv:5", "bad_name")]


def _replay(database_url: str, *options: str) -> str:
    result = CliRunner().invoke(
        cli, ["quarantine", "replay", *options, "--database-url", database_url]
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_one_quarantine_replay_serves_imports_and_live_data_once(
    city: Conn, database_url: str, tmp_path: Path
) -> None:
    """Issue 16: an import's bad records are replayed by ``urbanpulse quarantine replay`` (not
    only by ``import --again``), validated as the import validates them: fdr-9 is registered
    behind gw-a, yet the import's records, which come from no gateway, pass; the live record
    from gw-a passes too. CSV (a naive time in the file's zone), JSON lines and Parquet."""
    t0 = YEAR_START
    rome = t0.astimezone(ZoneInfo("Europe/Rome")).replace(tzinfo=None)
    _import(
        city,
        _csv([("fdr-0", "voltage", rome.isoformat(), 230, "V"),
              ("fdr-9", "voltage", rome.isoformat(), 231, "V")]),
        Format.CSV,
        timezone="Europe/Rome",
    )  # fmt: skip
    pack = [{"n": "fdr-0/voltage", "t": t0.timestamp() + 60, "v": 230},
            {"n": "fdr-9/voltage", "t": t0.timestamp() + 60, "v": 232}]  # fmt: skip
    _import(city, json.dumps(pack).encode(), Format.JSONL)
    path = tmp_path / "history.parquet"
    pq.write_table(
        pa.table({"sensor": ["fdr-9"], "quantity": ["voltage"], "time": [t0.timestamp() + 120],
                  "value": [233.0]}),
        path,
    )  # fmt: skip
    _import(city, path.read_bytes(), Format.PARQUET)
    now = time.time()
    live = quarantine.Quarantined(
        now, "ssc/v1/gw-a/up", encode_resolved([Record("fdr-9/voltage", now - 60, "V", 229.0)])
    )
    live.entries = [quarantine.Rejected("gw-a", "fdr-9", 0, "unknown_sensor", "not registered")]
    quarantine_table.store(city, [live])
    city.commit()
    assert _count(city, "SELECT count(*) FROM quarantine WHERE sensor_id = 'fdr-9'") == 4
    # Still unknown: nothing to store yet, everything stays.
    assert "examined 4, stored 0, duplicates 0, still bad 4" in _replay(
        database_url, "--sensor", "fdr-9"
    )
    city.execute(
        "INSERT INTO sensors (id, kind, domain, gateway_id, district_id) "
        "VALUES ('fdr-9', 'feeder_meter', 'energy', 'gw-a', 'centre')"
    )
    city.commit()
    assert "examined 4, stored 4, duplicates 0, still bad 0" in _replay(
        database_url, "--sensor", "fdr-9"
    )
    assert "examined 0, stored 0" in _replay(database_url, "--sensor", "fdr-9")
    stored = city.execute(
        "SELECT r.time, r.value FROM readings r JOIN sensors s ON s.key = r.sensor_key "
        "WHERE s.id = 'fdr-9' ORDER BY r.time"
    ).fetchall()
    city.commit()
    assert [value for _, value in stored] == [231.0, 232.0, 233.0, 229.0]
    assert [moment for moment, _ in stored][:3] == [t0 + timedelta(minutes=m) for m in range(3)]
    assert quarantine_table.summary(city, QuarantineFilter(sensor="fdr-9")) == {}


def test_an_import_entry_replayed_past_the_retention_stays(city: Conn) -> None:
    """No age limit but the retention: a record within it at import time, past it at the
    replay, is refused (its partition is gone or going); within it, it is stored."""
    t0 = YEAR_START
    _import(city, _csv([("fdr-8", "voltage", _iso(t0), 231, "V")]), Format.CSV)
    city.execute(
        "INSERT INTO sensors (id, kind, domain, district_id) "
        "VALUES ('fdr-8', 'feeder_meter', 'energy', 'centre')"
    )
    city.commit()
    late = (t0 + timedelta(days=401)).timestamp()
    result = quarantine.replay(city, sensor_id="fdr-8", policy=POLICY, now=late)
    assert (result.stored, [bad.reason for bad in result.still_bad]) == (0, ["time_too_old"])
    result = quarantine.replay(city, sensor_id="fdr-8", policy=POLICY)
    assert (result.examined, result.stored, result.still_bad) == (1, 1, [])
