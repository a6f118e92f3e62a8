"""The idempotent COPY write path, in both storage modes."""

from __future__ import annotations

import struct
import time
from datetime import UTC, datetime

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.storage.writer import (
    Conflict,
    ReadingWriter,
    _binary_array,
    conflict_owners,
    encode_copy,
    time_us,
)

Conn = psycopg.Connection[tuple[object, ...]]


def _sensor(db: Conn, sensor_id: str = "wat-dma-0001") -> int:
    key = db.execute(
        "INSERT INTO sensors (id, kind, domain) VALUES (%s, 'water_inflow', 'water') RETURNING key",
        (sensor_id,),
    ).fetchone()[0]  # type: ignore[index]
    db.commit()
    return int(key)  # type: ignore[arg-type]


def _mode(db: Conn) -> str:
    return str(db.execute("SELECT value FROM storage_settings WHERE name = 'mode'").fetchone()[0])  # type: ignore[index]


def test_a_batch_written_twice_leaves_one_copy(db: Conn) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db))
    start = float(int(time.time()) - 7200)
    rows = [(start + i * 0.5, sensor, 1, i / 7) for i in range(2000)]
    first = writer.write(rows)
    db.commit()
    again = writer.write(rows)
    db.commit()
    assert (first.inserted, first.duplicates) == (2000, 0)
    assert (again.inserted, again.duplicates) == (0, 2000)
    stored = db.execute(
        "SELECT extract(epoch FROM time)::float8, sensor_key, quantity_key, value FROM readings "
        "ORDER BY time"
    ).fetchall()
    assert stored == rows


def test_a_batch_overlapping_an_earlier_one_adds_only_the_new_rows(db: Conn) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db))
    start = float(int(time.time()) - 600)
    writer.write([(start + i, sensor, 1, 1.0) for i in range(100)])
    result = writer.write([(start + i, sensor, 1, 2.0) for i in range(50, 150)])
    db.commit()
    # The 50 overlapping rows carry another value: conflicts, not duplicates.
    assert (result.inserted, result.duplicates, len(result.conflicts)) == (50, 0, 50)
    # The first value written wins: a redelivery never rewrites a stored reading.
    assert db.execute("SELECT count(*), sum(value) FROM readings").fetchone() == (150, 200.0)
    again = writer.write([(start + i, sensor, 1, 1.0) for i in range(100)])
    assert (again.inserted, again.duplicates, again.conflicts) == (0, 100, ())


def test_a_conflict_names_the_reading_and_both_values(db: Conn) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db))
    moment = float(int(time.time())) + 0.25
    writer.write([(moment, sensor, 1, 1.5)], [(moment, sensor, 1, "a", None, None, None)])
    db.commit()
    # Within one batch too: the first of two values stays, the second is a conflict.
    result = writer.write(
        [(moment + 1, sensor, 1, 3.0), (moment + 1, sensor, 1, 4.0), (moment, sensor, 1, 2.5)],
        [(moment, sensor, 1, "b", None, None, None)],
    )
    db.commit()
    micros = round(moment * 1e6)
    assert (result.inserted, result.duplicates) == (1, 0)
    assert sorted(result.conflicts, key=repr) == sorted(
        [
            Conflict(sensor, 1, micros, 2.5, 1.5, "wat-dma-0001", "flow"),
            Conflict(sensor, 1, micros + 1_000_000, 4.0, 3.0, "wat-dma-0001", "flow"),
            Conflict(
                sensor,
                1,
                micros,
                ("b", None, None, None),
                ("a", None, None, None),
                "wat-dma-0001",
                "flow",
            ),
        ],
        key=repr,
    )
    assert time_us(moment) == micros


def test_duplicates_inside_one_batch_are_stored_once(db: Conn) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db))
    moment = float(int(time.time()))
    result = writer.write(
        [(moment, sensor, 1, 1.0), (moment, sensor, 1, 1.0), (moment, sensor, 2, 1.0)]
    )
    db.commit()
    assert (result.inserted, result.duplicates) == (2, 1)


def test_a_rolled_back_batch_leaves_nothing(db: Conn) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db))
    writer.write([(float(int(time.time())), sensor, 1, 1.0)])
    db.rollback()
    assert db.execute("SELECT count(*) FROM readings").fetchone() == (0,)
    # The writer stays usable after a rollback.
    assert writer.write([(float(int(time.time())), sensor, 1, 1.0)]).inserted == 1


def test_non_numeric_values_go_to_the_side_table(db: Conn) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db))
    moment = float(int(time.time()))
    extras = [
        (moment, sensor, 3, "open", None, None, None),
        (moment + 1, sensor, 3, None, True, None, None),
        (moment + 2, sensor, 3, None, None, b"\x00\xff", None),
        (moment + 3, sensor, 3, None, None, None, 12.5),
    ]
    assert writer.write([], extras).inserted == 4
    assert writer.write([], extras).inserted == 0
    db.commit()
    rows = db.execute(
        "SELECT value_string, value_bool, value_data, value_sum FROM readings_extra ORDER BY time"
    ).fetchall()
    assert rows == [
        ("open", None, None, None),
        (None, True, None, None),
        (None, None, b"\x00\xff", None),
        (None, None, None, 12.5),
    ]


def test_readings_far_from_now_get_their_partitions_on_the_way(db: Conn) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db))
    old = datetime(2026, 1, 15, 12, tzinfo=UTC).timestamp()
    result = writer.write([(old, sensor, 1, 1.0), (old + 86400 * 40, sensor, 1, 2.0)])
    db.commit()
    assert result.inserted == 2


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=3e8, max_value=4e9).map(lambda t: round(t, 6)),
            st.integers(min_value=-(2**31), max_value=2**31 - 1),
            st.integers(min_value=-(2**15), max_value=2**15 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=20,
    )
)
def test_the_copy_stream_follows_postgresql_binary_format(
    rows: list[tuple[float, int, int, float]],
) -> None:
    data = encode_copy(rows)
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00"
    offset = 19
    for t, sensor, quantity, value in rows:
        fields, l1, micros, l2, s, l3, q, l4, v = struct.unpack_from(">hiqiiihid", data, offset)
        assert (fields, l1, l2, l3, l4) == (4, 8, 4, 2, 8)
        assert micros == round((t - 946684800) * 1e6)
        assert (s, q) == (sensor, quantity)
        assert v == value or (v != v and value != value)
        offset += 40
    assert data[offset:] == b"\xff\xff"


def test_times_are_stored_to_the_microsecond(db: Conn) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db))
    moment = 1_764_000_000.123456
    writer.write([(moment, sensor, 1, 1.0)])
    db.commit()
    stored = db.execute("SELECT time FROM readings").fetchone()[0]  # type: ignore[index]
    assert stored == datetime(2025, 11, 24, 16, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize("value", [0.0, -0.0, 1e308, -1e-308, 5e-324])
def test_extreme_doubles_survive_the_round_trip(db: Conn, value: float) -> None:
    sensor = _sensor(db)
    ReadingWriter(db, _mode(db)).write([(float(int(time.time())), sensor, 1, value)])
    db.commit()
    assert db.execute("SELECT value FROM readings").fetchone() == (value,)


def test_the_direct_path_copies_new_rows_with_their_event_and_invalidations(db: Conn) -> None:
    sensor = _sensor(db)
    mode = _mode(db)
    writer = ReadingWriter(db, mode, live_events=True, direct=True)
    start = float(int(time.time()) // 3600 * 3600 - 3 * 3600) + 0.125  # spans 2 whole hours
    rows = [(start + i * 3.5, sensor, 1, i / 3) for i in range(2000)]
    result = writer.write(rows)
    db.commit()
    assert (result.inserted, result.duplicates, result.conflicts) == (2000, 0, ())
    assert (writer.direct_batches, writer.fallback_batches) == (1, 0)
    stored = db.execute(
        "SELECT extract(epoch FROM time)::float8, sensor_key, quantity_key, value FROM readings "
        "ORDER BY time"
    ).fetchall()
    assert stored == rows
    (keys, quantities, times, values) = db.execute(
        "SELECT sensor_keys, quantity_keys, times, readings FROM events WHERE type = 'readings'"
    ).fetchone()  # type: ignore[misc]
    assert keys == [sensor] * 2000
    assert quantities == [1] * 2000
    assert [t.timestamp() for t in times] == [r[0] for r in rows]  # type: ignore[attr-defined]
    assert values == [r[3] for r in rows]
    if mode == "partitioned":
        spans: dict[int, list[float]] = {}
        for t, *_ in rows:
            spans.setdefault(int(t // 3600), []).append(t)
        invalidated = db.execute(
            "SELECT extract(epoch FROM lo)::float8, extract(epoch FROM hi)::float8 "
            "FROM rollup_invalidations ORDER BY lo"
        ).fetchall()
        assert invalidated == [(min(v), max(v)) for _, v in sorted(spans.items())]


def test_the_direct_path_falls_back_when_the_key_refuses_the_batch(db: Conn) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db), live_events=True, direct=True)
    start = float(int(time.time()) - 600)
    writer.write([(start + i, sensor, 1, 1.0) for i in range(100)])
    db.commit()
    # 50 already stored with another value, 50 with the same value, 50 new.
    batch = [(start + i, sensor, 1, 2.0) for i in range(50)]
    batch += [(start + i, sensor, 1, 1.0) for i in range(50, 100)]
    batch += [(start + i, sensor, 1, 1.0) for i in range(100, 150)]
    result = writer.write(batch)
    db.commit()
    assert (writer.direct_batches, writer.fallback_batches) == (1, 1)
    assert (result.inserted, result.duplicates, len(result.conflicts)) == (50, 50, 50)
    assert db.execute("SELECT count(*), sum(value) FROM readings").fetchone() == (150, 150.0)
    # The live stream got each new reading once: 100 from the first batch, 50 from the second.
    assert db.execute(
        "SELECT sum(cardinality(times)) FROM events WHERE type = 'readings'"
    ).fetchone() == (150,)


def test_a_non_numeric_conflict_at_a_sub_microsecond_time_is_matched_to_its_reading(
    db: Conn,
) -> None:
    sensor = _sensor(db)
    writer = ReadingWriter(db, _mode(db))
    # A time that datetime.fromtimestamp rounds up and time_us down: extras staged the first
    # way came back from the conflict query 1 µs away from the reading that carried them.
    moment = 1796480000.1000025
    assert datetime.fromtimestamp(moment, UTC) != datetime.fromtimestamp(time_us(moment) / 1e6, UTC)
    writer.write([(moment, sensor, 1, 1.0)], [(moment, sensor, 3, "open", None, None, None)])
    db.commit()
    refused = (moment, sensor, 3, "shut", None, None, None)
    result = writer.write([], [refused])
    db.commit()
    [conflict] = result.conflicts
    assert conflict.time_us == time_us(moment)
    assert (conflict.received, conflict.stored) == (
        ("shut", None, None, None),
        ("open", None, None, None),
    )
    # The worker and the replay find the carrier by the reading's own time.
    owners = conflict_owners(result.conflicts, [("other", [], []), ("carrier", [], [refused])])
    assert owners == {"carrier": [conflict]}
    # Numeric and non-numeric readings of one instant are stored at one time.
    times = db.execute(
        "SELECT (extract(epoch FROM time) * 1000000)::int8 FROM readings "
        "UNION ALL SELECT (extract(epoch FROM time) * 1000000)::int8 FROM readings_extra"
    ).fetchall()
    assert times == [(time_us(moment),), (time_us(moment),)]


def test_conflicts_of_one_value_carried_twice_go_one_to_each_carrier() -> None:
    # Replay used to give both to the first entry and mark the second replayed, unstored.
    a = Conflict(7, 1, 1_000_000, 2.0, 1.0, "s", "flow")
    b = Conflict(7, 1, 1_000_000, 2.0, 1.0, "s", "flow")
    owners = conflict_owners([a, b], [(1, [(1.0, 7, 1, 2.0)], []), (2, [(1.0, 7, 1, 2.0)], [])])
    assert owners == {1: [a], 2: [b]}


@given(
    st.sampled_from(
        [
            ("i", 23, st.integers(min_value=-(2**31), max_value=2**31 - 1)),
            ("h", 21, st.integers(min_value=-(2**15), max_value=2**15 - 1)),
            ("q", 1184, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
            ("d", 701, st.floats()),
        ]
    ).flatmap(lambda kind: st.tuples(st.just(kind[:2]), st.lists(kind[2], max_size=30)))
)
def test_binary_arrays_follow_postgresql_binary_format(
    case: tuple[tuple[str, int], list[float]],
) -> None:
    (code, oid), values = case
    data = _binary_array(oid, code, values)
    size = struct.calcsize(code)
    assert struct.unpack_from(">iiIii", data) == (1, 0, oid, len(values), 1)
    offset = 20
    for value in values:
        length, item = struct.unpack_from(f">i{code}", data, offset)
        assert length == size
        assert item == value or (item != item and value != value)
        offset += 4 + size
    assert offset == len(data)


def test_an_empty_batch_encodes_to_the_bare_copy_stream() -> None:
    assert encode_copy([]) == b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\xff\xff"
