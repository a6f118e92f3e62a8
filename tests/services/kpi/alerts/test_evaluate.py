"""The evaluator's rules of conduct: hysteresis, minimum duration, one open alert per rule and
subject, scope changes, disabled and broken rules, and the events it writes."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import psycopg
import pytest

from services.kpi.alerts import clear, evaluate, set_enabled
from services.kpi.alerts.evaluate import OUT_OF_SCOPE, data_horizon
from services.kpi.alerts.model import EvaluationResult
from services.storage.urls import libpq_url

from ..conftest import City
from .conftest import T0, Install, alert_events, alert_rows

MINUTE = timedelta(minutes=1)


def _fire(city: City, install: Install) -> int:
    install("waste-fire")  # raise at >= 70 °C, clear below 60 °C, no minimum duration
    city.district("d1")
    return city.sensor("bin-1", "waste_container", "d1")


def test_between_clear_threshold_and_threshold_neither_raises_nor_clears(
    city: City, install: Install
) -> None:
    db = city.conn
    key = _fire(city, install)
    steps = [
        (65.0, (0, 0, 0)),  # in the band, nothing open: nothing raised
        (70.0, (1, 0, 1)),  # at the threshold: raised
        (61.0, (0, 0, 1)),  # back in the band: still open
        (69.9, (0, 0, 1)),
        (60.0, (0, 0, 1)),  # at the clear threshold is not below it
        (59.9, (0, 1, 0)),  # below: cleared
        (65.0, (0, 0, 0)),  # in the band again: nothing raised
    ]
    for n, (value, expected) in enumerate(steps):
        moment = T0 + n * 10 * MINUTE
        city.write([(key, "temperature", moment, value)])
        result = evaluate(db, moment + MINUTE)
        assert (result.raised, result.cleared, result.open) == expected, value


def test_below_rules_have_hysteresis_the_other_way(city: City, install: Install) -> None:
    db = city.conn
    install("water-low-pressure", duration_s=0)  # below 2 bar, clears above 2.2 bar
    city.district("d1")
    key = city.sensor("p-1", "water_pressure", "d1")
    steps = [(210_000, (0, 0)), (190_000, (1, 0)), (210_000, (0, 0)), (220_000, (0, 0))]
    for n, (pascal, expected) in enumerate([*steps, (230_000, (0, 1))]):
        moment = T0 + n * 10 * MINUTE
        city.write([(key, "pressure", moment, pascal)])
        result = evaluate(db, moment + MINUTE)
        assert (result.raised, result.cleared) == expected, pascal


def test_a_short_spike_raises_nothing(city: City, install: Install) -> None:
    db = city.conn
    install("water-low-pressure")  # below 2 bar for 5 minutes
    city.district("d1")
    key = city.sensor("p-1", "water_pressure", "d1")
    city.series(key, "pressure", T0, T0 + 2 * MINUTE, step_s=60, value=150_000.0)
    city.series(key, "pressure", T0 + 2 * MINUTE, T0 + 20 * MINUTE, step_s=60, value=300_000.0)
    assert evaluate(db, T0 + 2 * MINUTE).pending == 1
    after = evaluate(db, T0 + 3 * MINUTE)  # back to normal: the clock stops
    assert (after.raised, after.pending) == (0, 0)
    assert evaluate(db, T0 + 10 * MINUTE).raised == 0
    assert alert_rows(db) == []
    assert db.execute("SELECT count(*) FROM alert_conditions").fetchone() == (0,)


def test_a_condition_interrupted_starts_its_duration_again(city: City, install: Install) -> None:
    db = city.conn
    install("water-low-pressure")
    city.district("d1")
    key = city.sensor("p-1", "water_pressure", "d1")
    low, ok = 150_000.0, 300_000.0
    city.series(key, "pressure", T0, T0 + 4 * MINUTE, step_s=60, value=low)
    city.series(key, "pressure", T0 + 4 * MINUTE, T0 + 5 * MINUTE, step_s=60, value=ok)
    city.series(key, "pressure", T0 + 5 * MINUTE, T0 + 20 * MINUTE, step_s=60, value=low)
    assert evaluate(db, T0 + MINUTE).pending == 1
    assert evaluate(db, T0 + 5 * MINUTE).pending == 0  # saw the 4th minute's good reading
    assert evaluate(db, T0 + 6 * MINUTE).pending == 1
    assert evaluate(db, T0 + 10 * MINUTE).raised == 0  # 4 minutes since it started again
    assert evaluate(db, T0 + 11 * MINUTE).raised == 1


def test_evaluating_again_never_duplicates_an_open_alert(city: City, install: Install) -> None:
    db = city.conn
    key = _fire(city, install)
    city.write([(key, "temperature", T0, 90.0)])
    for n in range(1, 4):
        result = evaluate(db, T0 + n * MINUTE)
        assert result.open == 1
    assert len(alert_rows(db)) == 1
    assert len(alert_events(db)) == 1


def test_a_sensor_without_recent_readings_keeps_its_alert_open(
    city: City, install: Install
) -> None:
    db = city.conn
    key = _fire(city, install)
    city.write([(key, "temperature", T0, 90.0)])
    assert evaluate(db, T0 + MINUTE).raised == 1
    # Days of silence later: no value to judge, and silence is not a recovery.
    result = evaluate(db, T0 + timedelta(days=2))
    assert (result.cleared, result.open) == (0, 1)


def test_a_manually_cleared_alert_is_raised_anew_if_the_condition_holds(
    city: City, install: Install
) -> None:
    db = city.conn
    key = _fire(city, install)
    city.write([(key, "temperature", T0, 90.0)])
    evaluate(db, T0 + MINUTE)
    [first] = alert_rows(db)
    clear(db, first["id"], "ana", "handled by the fire service")
    assert evaluate(db, T0 + 2 * MINUTE).raised == 1
    assert [a["state"] for a in alert_rows(db)] == ["cleared", "raised"]


def test_retired_sensor_and_disabled_rule_clear_their_alerts(city: City, install: Install) -> None:
    db = city.conn
    key = _fire(city, install)
    other = city.sensor("bin-2", "waste_container", "d1")
    install("waste-overflow")
    city.write([(key, "temperature", T0, 90.0), (other, "fill", T0, 1.1)])
    assert evaluate(db, T0 + MINUTE).raised == 2

    db.execute("UPDATE sensors SET status = 'retired' WHERE id = 'bin-1'")
    db.commit()
    assert evaluate(db, T0 + 2 * MINUTE).cleared == 1
    fire = alert_rows(db, "waste-fire")[0]
    assert (fire["state"], fire["cleared_by"], fire["clear_comment"]) == (
        "cleared",
        None,
        OUT_OF_SCOPE,
    )

    set_enabled(db, "waste-overflow", False)
    db.commit()
    result = evaluate(db, T0 + 3 * MINUTE)
    assert (result.cleared, result.open, result.rules) == (1, 0, 1)
    assert alert_rows(db, "waste-overflow")[0]["clear_comment"] == "rule disabled"
    assert [e[4] for e in alert_events(db)] == ["raised", "raised", "cleared", "cleared"]


def test_a_district_scoped_rule_watches_only_its_district(city: City, install: Install) -> None:
    db = city.conn
    city.district("d1")
    city.district("d2")
    install("waste-fire", district_id="d2")
    one = city.sensor("bin-1", "waste_container", "d1")
    two = city.sensor("bin-2", "waste_container", "d2")
    city.write([(one, "temperature", T0, 90.0), (two, "temperature", T0, 90.0)])
    evaluate(db, T0 + MINUTE)
    assert [a["subject_id"] for a in alert_rows(db)] == ["bin-2"]


def test_a_rule_broken_behind_the_engines_back_is_skipped(city: City, install: Install) -> None:
    db = city.conn
    key = _fire(city, install)
    install("waste-overflow")
    db.execute("UPDATE alert_rules SET threshold = NULL WHERE id = 'waste-overflow'")
    db.commit()
    city.write([(key, "temperature", T0, 90.0)])
    result = evaluate(db, T0 + MINUTE)
    assert (result.raised, result.rules, result.invalid_rules) == (1, 1, ("waste-overflow",))


def test_events_are_written_in_the_evaluations_transaction(city: City, install: Install) -> None:
    db = city.conn
    key = _fire(city, install)
    city.write([(key, "temperature", T0, 90.0)])

    def fail_after_evaluating() -> None:
        with db.transaction():
            evaluate(db, T0 + MINUTE)  # a savepoint inside the caller's transaction
            raise RuntimeError("the caller fails after evaluating")

    with pytest.raises(RuntimeError):
        fail_after_evaluating()
    assert alert_rows(db) == []
    assert alert_events(db) == []
    evaluate(db, T0 + MINUTE)
    [alert] = alert_rows(db)
    row = db.execute(
        "SELECT data FROM events WHERE type = 'alert' AND (data->>'id')::bigint = %s",
        (alert["id"],),
    ).fetchone()
    assert row is not None
    data = row[0]
    assert isinstance(data, dict)
    assert (data["rule_id"], data["subject_id"], data["state"]) == ("waste-fire", "bin-1", "raised")
    assert datetime.fromisoformat(data["raised_at"]) == T0 + MINUTE


def test_two_evaluators_at_once_raise_one_alert(
    city: City, install: Install, database_url: str
) -> None:
    db = city.conn
    key = _fire(city, install)
    city.write([(key, "temperature", T0, 90.0)])
    results: list[EvaluationResult] = []
    with psycopg.connect(libpq_url(database_url)) as other:
        thread = threading.Thread(target=lambda: results.append(evaluate(other, T0 + MINUTE)))
        with db.transaction():
            first = evaluate(db, T0 + MINUTE)
            thread.start()
            thread.join(0.5)
            # The second evaluator waits for the first one's commit...
            assert thread.is_alive()
        thread.join(10)
    # ... and then finds the alert open.
    assert (first.raised, results[0].raised, results[0].open) == (1, 0, 1)
    assert len(alert_rows(db)) == 1


def test_the_data_horizon_is_the_rollup_watermark_when_it_lags(city: City) -> None:
    db = city.conn
    if city.mode != "partitioned":
        assert data_horizon(db, T0) == T0
        return
    db.execute(
        "INSERT INTO rollup_watermarks (name, watermark) VALUES ('rollups', %s) "
        "ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark",
        (T0,),
    )
    db.commit()
    assert data_horizon(db, T0 + timedelta(hours=1)) == T0
    assert data_horizon(db, T0 - MINUTE) == T0 - MINUTE
