"""Record validation and pack salvage: tables of (input, expected reason)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gateway.errors import SenMLError
from gateway.senml import Record
from services.ingest.salvage import decode_salvaging
from services.ingest.validate import Policy, Reason, Sensor, raw_kept, validate
from services.storage.retention_policy import make_policy

NOW = 1_764_000_000.0
SENSORS = {
    "fdr-1": Sensor(key=1, id="fdr-1", kind="feeder_meter", gateway_id="gw-a"),
    "old-1": Sensor(key=2, id="old-1", kind="feeder_meter", gateway_id="gw-a", status="retired"),
    "loop-1": Sensor(
        key=3, id="loop-1", kind="traffic_counter", gateway_id="gw-a", lanes=2, interval_s=60.0
    ),
    "dma-1": Sensor(key=4, id="dma-1", kind="water_inflow", gateway_id=None, rated_max=0.5),
    # A 4.5 kW inverter: the rating bounds its power, not its cumulative energy register.
    "pv-1": Sensor(key=5, id="pv-1", kind="solar_inverter", gateway_id="gw-a", rated_max=4500.0),
}


def _record(
    name: str,
    value: float | None = 230.0,
    unit: str | None = "V",
    time: float = NOW,
    **other: object,
) -> Record:
    return Record(name=name, time=time, unit=unit, value=value, **other)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        pytest.param(_record("fdr-1/voltage"), None, id="good"),
        pytest.param(_record("no-slash"), Reason.BAD_NAME, id="no-quantity"),
        pytest.param(_record("ghost/voltage"), Reason.UNKNOWN_SENSOR, id="unknown-sensor"),
        pytest.param(_record("old-1/voltage"), Reason.SENSOR_RETIRED, id="retired"),
        pytest.param(_record("fdr-1/pm25", unit="ug/m3"), Reason.UNKNOWN_QUANTITY, id="kind"),
        pytest.param(_record("fdr-1/voltage", unit="kV"), Reason.WRONG_UNIT, id="unit"),
        pytest.param(_record("fdr-1/voltage", value=301.0), Reason.OUT_OF_RANGE, id="high"),
        pytest.param(_record("fdr-1/voltage", value=-1.0), Reason.OUT_OF_RANGE, id="low"),
        pytest.param(_record("fdr-1/voltage", time=NOW + 301), Reason.TIME_IN_FUTURE, id="future"),
        pytest.param(
            _record("fdr-1/voltage", time=NOW - 401 * 86400), Reason.TIME_TOO_OLD, id="too-old"
        ),
        pytest.param(_record("loop-1/count", value=99.0, unit="count"), None, id="count-ok"),
        # 0.83 vehicles/s per lane x 2 lanes x 60 s = 99.6
        pytest.param(
            _record("loop-1/count", value=101.0, unit="count"),
            Reason.OUT_OF_RANGE,
            id="count-over-lane-capacity",
        ),
        pytest.param(
            _record("dma-1/flow", value=0.6, unit="m3/s"), Reason.OUT_OF_RANGE, id="over-rated-max"
        ),
        pytest.param(
            _record("pv-1/energy", value=5e9, unit="J"), None, id="rating-bounds-power-only"
        ),
        pytest.param(
            _record("pv-1/power", value=4600.0, unit="W"), Reason.OUT_OF_RANGE, id="over-rating"
        ),
        pytest.param(
            _record("fdr-1/voltage", value=None, unit=None, string_value="a\x00b"),
            Reason.BAD_STRING,
            id="nul-in-string",
        ),
    ],
)
def test_each_rule_has_its_reason(record: Record, reason: Reason | None) -> None:
    result = validate("gw-a", [record], SENSORS, NOW)
    assert [r.reason for r in result.rejects] == ([] if reason is None else [reason])
    assert len(result.rows) + len(result.extras) == (1 if reason is None else 0)


def test_accepted_units_are_stored_canonical() -> None:
    result = validate("gw-a", [_record("dma-1/flow", value=120.0, unit="l/s")], SENSORS, NOW)
    assert result.rows == [(NOW, 4, 1, pytest.approx(0.12))]


def test_a_sensor_of_another_gateway_is_refused() -> None:
    result = validate("gw-b", [_record("fdr-1/voltage")], SENSORS, NOW)
    assert [r.reason for r in result.rejects] == [Reason.WRONG_GATEWAY]


def test_non_numeric_values_go_to_the_extras() -> None:
    record = Record(name="fdr-1/voltage", time=NOW, bool_value=True)
    result = validate("gw-a", [record], SENSORS, NOW, Policy())
    assert result.extras == [(NOW, 1, 10, None, True, None, None)]


def test_one_bad_record_costs_only_itself() -> None:
    pack = [
        {"bn": "fdr-1/", "bt": NOW, "n": "voltage", "v": 230},
        {"n": "voltage", "v": "oops", "t": 1},
        {"n": "voltage", "v": 231, "t": 2},
    ]
    salvaged = decode_salvaging(json.dumps(pack).encode(), NOW)
    assert [r.value for r in salvaged.records] == [230.0, 231.0]
    assert [b.index for b in salvaged.bad] == [1]
    assert salvaged.bad[0].error.reason == "wrong_type"
    assert [salvaged.original_index(i) for i in range(2)] == [0, 2]


def test_a_bad_record_carrying_base_fields_loses_the_pack() -> None:
    pack = [
        {"bn": "fdr-1/", "n": "voltage", "v": 230},
        {"bn": "fdr-2/", "bt": "later", "n": "voltage", "v": 1},
        {"n": "voltage", "v": 2},
    ]
    with pytest.raises(SenMLError) as info:
        decode_salvaging(json.dumps(pack).encode(), NOW)
    assert info.value.index == 1


def test_base_only_records_do_not_shift_the_indexes() -> None:
    pack = [{"bn": "fdr-1/", "bt": NOW}, {"n": "voltage", "v": 230}, {"n": "voltage", "v": 1}]
    salvaged = decode_salvaging(json.dumps(pack).encode(), NOW)
    assert [salvaged.original_index(i) for i in range(2)] == [1, 2]


def test_a_pending_sensor_is_held_until_its_kind_is_set() -> None:
    sensors = {
        "new-1": Sensor(key=9, id="new-1", kind="unknown", gateway_id=None, status="pending")
    }
    result = validate("gw-a", [_record("new-1/voltage")], sensors, NOW)
    assert [r.reason for r in result.rejects] == [Reason.SENSOR_PENDING]


def test_a_pack_with_too_many_bad_records_is_refused_whole() -> None:
    pack = [{"bn": "fdr-1/", "bt": NOW, "n": "voltage", "v": 230}]
    pack += [{"n": "voltage", "v": "bad", "t": i} for i in range(1, 150)]
    with pytest.raises(SenMLError) as info:
        decode_salvaging(json.dumps(pack).encode(), NOW)
    assert info.value.index is None
    assert "more than 100 bad records" in str(info.value)


def test_a_sensors_raw_retention_is_its_age_limit_whatever_the_policys_window() -> None:
    """The snapshot's per-series retention (the policies: the kind's 2 days beats the domain's
    1000) decides, not ``Policy.max_age_s``; a sensor without it keeps that window."""
    policies = {
        ("kind", "feeder_meter"): make_policy("kind", "feeder_meter", 2),
        ("domain", "energy"): make_policy("domain", "energy", 1000),
    }
    sensors = {
        "fdr-1": replace(SENSORS["fdr-1"], raw_kept=raw_kept(policies, "energy", "feeder_meter")),
        "pv-1": replace(SENSORS["pv-1"], raw_kept=raw_kept(policies, "energy", "solar_inverter")),
        "fdr-2": replace(SENSORS["fdr-1"], id="fdr-2", key=6),
    }
    records = [
        _record("fdr-1/voltage", time=NOW - 3 * 86400),
        _record("pv-1/power", value=10.0, unit="W", time=NOW - 900 * 86400),
        _record("fdr-2/voltage", time=NOW - 401 * 86400),
        _record("fdr-1/voltage", time=NOW - 86400),
    ]
    out = validate("gw-a", records, sensors, NOW, Policy(max_age_s=400 * 86400))
    assert [(r.index, r.reason) for r in out.rejects] == [
        (0, Reason.TIME_TOO_OLD),
        (2, Reason.TIME_TOO_OLD),
    ]
    assert out.rejects[0].detail.endswith(
        ": raw voltage readings of a feeder_meter are kept 2 days (retention policy kind "
        "feeder_meter)"
    )
    assert [row[1] for row in out.rows] == [5, 1]
