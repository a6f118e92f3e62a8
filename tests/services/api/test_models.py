"""The registry's bodies and answers agree with the registry's columns (the schema's).

A column added to the schema and to the row model but forgotten in an answer or an update body
(or the other way round) fails here, rather than going unseen: an answer's model ignores a key
it does not know, and an update body simply cannot set the new column.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from services.api import models
from services.storage import registry
from services.storage.registry import DistrictRow, GatewayRow, RegistryTable, Row, SensorRow


@pytest.mark.parametrize(
    ("answer", "table"),
    [
        (models.District, registry.districts),
        (models.Gateway, registry.gateways),
        (models.Sensor, registry.sensors),
    ],
)
def test_an_answer_holds_every_column_a_read_gives(
    answer: type[BaseModel], table: RegistryTable
) -> None:
    assert list(answer.model_fields) == list(table.columns)


def test_a_sensors_detail_adds_only_its_last_readings() -> None:
    assert list(models.SensorDetail.model_fields) == [*registry.sensors.columns, "last"]


@pytest.mark.parametrize(
    ("create", "update", "row", "fixed"),
    [
        (models.DistrictCreate, models.DistrictUpdate, DistrictRow, {"id"}),
        (models.GatewayCreate, models.GatewayUpdate, GatewayRow, {"id"}),
        # A sensor's domain follows its kind.
        (models.SensorCreate, models.SensorUpdate, SensorRow, {"id", "domain"}),
    ],
)
def test_bodies_set_the_rows_fields_and_an_update_all_but_the_fixed(
    create: type[BaseModel], update: type[BaseModel], row: type[Row], fixed: set[str]
) -> None:
    assert set(create.model_fields) == set(row.model_fields)
    assert set(update.model_fields) == set(row.model_fields) - fixed
