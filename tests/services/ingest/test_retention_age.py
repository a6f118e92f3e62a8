"""How old a live reading may be: its series' raw retention (``retention_policies``), not one
window for all (issue 16). Against the real database, in both storage modes; the worker's test
also through a real broker.

A reading its series' policy would remove at once is refused (``time_too_old``, the policy
named); one within a longer policy is stored even past the 400-day default.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import psycopg
import pytest

from gateway import topics
from gateway.senml import Record
from services.ingest.sensor_directory import SensorDirectory
from services.ingest.validate import Policy, Reason, Validator
from services.ingest.worker import IngestWorker
from services.storage import retention
from services.storage.retention_policy import make_policy
from tests.fixtures.broker import BrokerUnderTest, MqttConnect

Conn = psycopg.Connection[tuple[object, ...]]
DAY = 86400.0


def _city(conn: Conn) -> None:
    """Gateway gw-a with a feeder meter, a water-quality probe and an air-quality station, and
    the policies: feeder meters 2 days, the water domain 1000, any temperature 5."""
    conn.execute("INSERT INTO gateways (id) VALUES ('gw-a')")
    conn.cursor().executemany(
        "INSERT INTO sensors (id, kind, domain, gateway_id) VALUES (%s, %s, %s, 'gw-a')",
        [
            ("fdr-1", "feeder_meter", "energy"),
            ("wq-1", "water_quality", "water"),
            ("aq-1", "air_quality", "environment"),
        ],
    )
    for policy in (
        make_policy("kind", "feeder_meter", 2),
        make_policy("domain", "water", 1000),
        make_policy("quantity", "temperature", 5),
    ):
        retention.set_policy(conn, policy, "test")
    conn.commit()


# (name, unit, value, age in days, stored?, the policy a refusal names)
CASES = [
    ("fdr-1/voltage", "V", 231.0, 1, True, None),
    ("fdr-1/voltage", "V", 232.0, 3, False, "kind feeder_meter"),
    ("wq-1/ph", "pH", 7.1, 500, True, None),  # past the old 400-day window, within 1000
    ("wq-1/temperature", "Cel", 12.0, 10, False, "quantity temperature"),
    ("aq-1/pm25", "ug/m3", 10.0, 300, True, None),
    ("aq-1/pm25", "ug/m3", 11.0, 500, False, "default"),
]


def test_the_worker_takes_each_series_age_limit_from_its_retention_policy(
    database_url: str,
    start_worker: Callable[..., IngestWorker],
    mqtt_broker: BrokerUnderTest,
    mqtt_connect: MqttConnect,
) -> None:
    with psycopg.connect(database_url) as conn:
        _city(conn)
        start_worker(database_url)
        now = float(int(time.time()))
        pack = [
            {"n": name, "u": unit, "v": value, "t": now - age * DAY}
            for name, unit, value, age, _, _ in CASES
        ]
        gateway = mqtt_connect(mqtt_broker)
        gateway.client.publish(
            topics.up_topic("gw-a"), json.dumps(pack).encode(), qos=1
        ).wait_for_publish(10)
        refused = [c for c in CASES if not c[4]]
        deadline = time.monotonic() + 20
        rows: list[tuple[object, ...]] = []
        while len(rows) < len(refused) and time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT record_index, reason, detail FROM quarantine ORDER BY record_index"
            ).fetchall()
            conn.commit()
            time.sleep(0.1)
        assert [(r[0], r[1]) for r in rows] == [
            (CASES.index(c), Reason.TIME_TOO_OLD.value) for c in refused
        ]
        for (_, _, detail), case in zip(rows, refused, strict=True):
            assert f"(retention policy {case[5]})" in str(detail)
        stored = conn.execute(
            "SELECT s.id, r.value FROM readings r JOIN sensors s ON s.key = r.sensor_key "
            "ORDER BY r.value"
        ).fetchall()
        conn.commit()
        assert stored == [
            (c[0].split("/")[0], c[2]) for c in sorted(CASES, key=lambda c: c[2]) if c[4]
        ]


def test_a_changed_policy_reaches_the_validator_with_the_next_reload(db: Conn) -> None:
    """The directory reloads the policies with the registry; the worker clears its validator's
    resolutions when the directory's version moves, as for a sensor re-kinded."""
    _city(db)
    directory = SensorDirectory(db, reload_every_s=0.0)
    validator = Validator(Policy(max_age_s=400 * DAY))
    now = time.time()
    records = [
        Record(name="fdr-1/voltage", time=now - 3 * DAY, unit="V", value=231.0),
        Record(name="wq-1/ph", time=now - 500 * DAY, unit="pH", value=7.0),
    ]

    seen = directory.version

    def reasons() -> list[str | None]:
        nonlocal seen
        directory.ensure(records)
        if directory.version != seen:  # what the worker does (worker.py, _add)
            validator.clear()
            seen = directory.version
        checked = validator.validate("gw-a", records, directory.snapshot, now)
        by_index = {r.index: r.reason.value for r in checked.rejects}
        return [by_index.get(i) for i in range(len(records))]

    assert reasons() == [Reason.TIME_TOO_OLD.value, None]
    retention.set_policy(db, make_policy("kind", "feeder_meter", 7), "test")
    assert retention.unset_policy(db, "domain", "water")
    db.commit()
    # Feeder meters now keep a week; water falls back to the 400-day default.
    assert reasons() == [None, Reason.TIME_TOO_OLD.value]


@pytest.mark.parametrize("kind", ["feeder_meter", "noise"])
def test_every_quantity_of_a_sensor_carries_its_raw_retention(db: Conn, kind: str) -> None:
    db.execute("INSERT INTO sensors (id, kind, domain) VALUES ('s-1', %s, 'energy')", (kind,))
    retention.set_policy(db, make_policy("quantity", "voltage", 3), "test")
    db.commit()
    sensor = SensorDirectory(db).snapshot["s-1"]
    kept = {k.quantity: (k.days, k.policy) for k in sensor.raw_kept}
    if kind == "feeder_meter":
        assert kept == {
            "power": (400, "default"),
            "voltage": (3, "quantity voltage"),
            "energy": (400, "default"),
        }
    else:
        assert kept == {"laeq": (400, "default")}
