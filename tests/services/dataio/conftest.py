"""A small city with three days of hourly history, imported through ``urbanpulse import``'s
core; and the API fixtures (an app, a key per role) for the import and export endpoints."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.dataio import importer
from services.dataio.sources import Format
from services.ingest.validate import Policy
from tests.services.api.conftest import (  # noqa: F401 - fixtures, used by name
    api_app,
    api_client,
    api_db,
    api_keys,
    api_settings,
)

Conn = psycopg.Connection[tuple[object, ...]]
# Three whole UTC days, ten days ago: inside the retention, before the current day.
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=10)
HOURS = 72
# sensor -> (district, latitude, longitude, voltage at hour h = base + h % 5)
SENSORS = {
    "fdr-c1": ("centre", 45.07, 7.68, 230.0),
    "fdr-c2": ("centre", 45.08, 7.69, 220.0),
    "fdr-n1": ("north", 45.12, 7.66, 225.0),
}


def voltage(sensor: str, hour: int) -> float:
    return SENSORS[sensor][3] + hour % 5


@pytest.fixture
def history(db: Conn) -> Conn:
    """Districts centre and north, three feeder meters, HOURS hourly voltages each."""
    db.execute("INSERT INTO districts (id, name) VALUES ('centre', 'Centre'), ('north', 'North')")
    for sensor, (district, latitude, longitude, _) in SENSORS.items():
        db.execute(
            "INSERT INTO sensors (id, kind, domain, district_id, latitude, longitude) "
            "VALUES (%s, 'feeder_meter', 'energy', %s, %s, %s)",
            (sensor, district, latitude, longitude),
        )
    db.commit()
    lines = ["sensor,quantity,time,value,unit"]
    for hour in range(HOURS):
        moment = (DAY0 + timedelta(hours=hour)).isoformat()
        lines.extend(f"{s},voltage,{moment},{voltage(s, hour)},V" for s in SENSORS)
    result = importer.import_file(
        db,
        io.BytesIO("\n".join(lines).encode()),
        Format.CSV,
        source="history.csv",
        policy=Policy(),
    )
    assert result.stored == HOURS * len(SENSORS)
    return db
