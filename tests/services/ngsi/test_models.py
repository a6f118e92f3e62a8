"""What services.ngsi.models emits validates against the published Smart Data Models schemas
(vendored in schemas/, resolved offline), in key-values form; normalized carries the same values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from gateway.kinds import KINDS
from services.ngsi import models

SCHEMAS = Path(__file__).parent / "schemas"
# The remote $refs the schemas make, answered from the vendored copies (never the network).
_REMOTE = {
    "https://smart-data-models.github.io/data-models/common-schema.json": "common-schema.json",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/"
    "Environment-schema.json": "Environment-schema.json",
}


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return loaded


def _retrieve(uri: str) -> Resource[Any]:
    if uri not in _REMOTE:
        raise LookupError(f"schema {uri} is not vendored")
    return Resource.from_contents(_load(_REMOTE[uri]))


def validator(entity_type: str) -> Draft202012Validator:
    return Draft202012Validator(
        _load(f"{entity_type}.schema.json"),
        registry=Registry(retrieve=_retrieve),  # type: ignore[call-arg]
        format_checker=FormatChecker(),
    )


AT = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
# A plausible reading of every quantity, in the canonical unit.
READING = {
    "pm25": 12.5,
    "pm10": 21.0,
    "no2": 38.0,
    "humidity": 64.0,
    "temperature": 14.5,
    "laeq": 61.2,
    "ph": 7.4,
    "turbidity": 0.6,
    "chlorine": 0.3,
    "index": 1234.567,
    "count": 18.0,
    "speed": 12.5,
    "occupancy": 0.21,
    "fill": 0.73,
    "power": 2300.0,
    "energy": 3.6e9,
    "voltage": 231.0,
}


def sensor(kind: str, **overrides: float) -> models.Sensor:
    latest = {q: (AT, overrides.get(q, READING[q])) for q in KINDS[kind].quantities}
    return models.Sensor(
        id=f"{kind}-7",
        kind=kind,
        interval_s=KINDS[kind].interval_s,
        district_id="d-north",
        latitude=45.07,
        longitude=7.68,
        latest=latest,
    )


@pytest.mark.parametrize("kind", sorted(models.MODELS))
def test_each_kind_validates_against_its_model(kind: str) -> None:
    entity = models.observation(sensor(kind))
    body = models.render(entity, key_values=True, with_context=False)
    validator(entity.type).validate(body)
    assert body["id"] == f"urn:ngsi-ld:{entity.type}:{kind}-7"
    # Every quantity of the kind the model has a place for is there.
    model = models.MODELS[kind]
    for quantity in KINDS[kind].quantities:
        assert model.targets[quantity].name in body


def test_values_are_in_the_models_units() -> None:
    air = models.render(models.observation(sensor("air_quality")), key_values=True)
    assert air["relativeHumidity"] == pytest.approx(0.64)  # a ratio, not %
    traffic = models.render(models.observation(sensor("traffic_counter")), key_values=True)
    assert traffic["averageVehicleSpeed"] == pytest.approx(45.0)  # km/h
    meter = models.render(models.observation(sensor("electricity_meter")), key_values=True)
    assert meter["totalActiveEnergyImport"] == pytest.approx(1000.0)  # kWh
    water = models.render(models.observation(sensor("water_meter")), key_values=True)
    assert water["waterConsumption"] == 1234


def test_the_schemas_do_catch_a_wrong_entity() -> None:
    """The validation is not vacuous: humidity left in % breaks the model's ratio."""
    entity = models.observation(sensor("air_quality"))
    body = models.render(entity, key_values=True, with_context=False)
    body["relativeHumidity"] = 64.0
    errors = list(validator(entity.type).iter_errors(body))
    assert errors
    body = models.render(entity, key_values=True, with_context=False)
    del body["dateObserved"]
    assert list(validator(entity.type).iter_errors(body))


def test_an_overfull_container_reads_full() -> None:
    entity = models.observation(sensor("waste_container", fill=1.15))
    body = models.render(entity, key_values=True, with_context=False)
    assert body["fillingLevel"] == 1.0
    validator("WasteContainer").validate(body)


def test_normalized_form_carries_the_same_values_with_time_and_unit() -> None:
    entity = models.observation(sensor("noise"))
    normalized = models.render(entity)
    flat = models.render(entity, key_values=True)
    assert normalized["@context"] == [
        models.model_context("dataModel.Environment"),
        models.CORE_CONTEXT,
    ]
    assert normalized["LAeq"] == {
        "type": "Property",
        "value": 61.2,
        "observedAt": "2026-03-02T10:15:00Z",
        "unitCode": "2N",
    }
    assert normalized["location"]["type"] == "GeoProperty"
    assert normalized["location"]["value"] == {"type": "Point", "coordinates": [7.68, 45.07]}
    for name, value in flat.items():
        if name not in ("id", "type", "@context"):
            assert normalized[name]["value"] == value
    # A sound level is observed over the reporting interval.
    assert flat["dateObservedFrom"] == "2026-03-02T10:14:00Z"
    assert flat["dateObservedTo"] == "2026-03-02T10:15:00Z"


def kpi(**overrides: Any) -> models.KpiRecord:
    fields: dict[str, Any] = {
        "kpi_id": "ENV-1",
        "scope": "d-north",
        "period": "month",
        "period_start": datetime(2026, 3, 1, tzinfo=UTC),
        "period_end": datetime(2026, 4, 1, tzinfo=UTC),
        "value": 17.5,
        "rating": "warning",
        "computed_at": AT,
        "name": "PM2.5 concentration",
    }
    fields.update(overrides)
    return models.KpiRecord(**fields)


def test_kpi_values_validate_as_key_performance_indicators() -> None:
    entity = models.kpi_entity(kpi())
    body = models.render(entity, key_values=True, with_context=False)
    validator("KeyPerformanceIndicator").validate(body)
    assert body["id"] == "urn:ngsi-ld:KeyPerformanceIndicator:ENV-1:d-north:month"
    assert body["kpiValue"] == 17.5
    assert body["currentStanding"] == "fair"
    assert body["calculationFrequency"] == "monthly"
    assert body["calculationPeriod"] == {"from": "2026-03-01", "to": "2026-03-31"}


def test_a_kpi_without_data_has_no_value_and_no_standing() -> None:
    entity = models.kpi_entity(kpi(value=None, rating="insufficient_data"))
    body = models.render(entity, key_values=True, with_context=False)
    validator("KeyPerformanceIndicator").validate(body)
    assert "kpiValue" not in body
    assert "currentStanding" not in body


def test_entity_ids_round_trip_and_foreign_ids_are_refused() -> None:
    assert models.parse_entity_id("urn:ngsi-ld:NoiseLevelObserved:n-1:a") == (
        "NoiseLevelObserved",
        "n-1:a",
    )
    assert models.parse_entity_id("urn:ngsi-ld:Building:b-1") is None
    assert models.parse_entity_id("urn:ngsi-ld:NoiseLevelObserved:") is None
    assert models.parse_entity_id("n-1") is None


def test_q_terms_filter_on_key_values() -> None:
    entity = models.observation(sensor("air_quality"))
    assert models.matches(entity, models.parse_q("pm25>10;pm10<=21"))
    assert not models.matches(entity, models.parse_q("pm25>20"))
    assert models.matches(entity, models.parse_q('areaServed=="d-north"'))
    assert not models.matches(entity, models.parse_q('areaServed!="d-north"'))
    assert models.matches(entity, models.parse_q("no2"))
    assert not models.matches(entity, models.parse_q("LAeq"))
    # A number compared with text is never equal, so always different.
    assert models.matches(entity, models.parse_q("areaServed!=3"))


@pytest.mark.parametrize("q", ["pm25>", "pm25>>3", "(pm25>3)", "a==1|b==2", "pm25==abc", ";", ""])
def test_q_outside_the_subset_is_refused(q: str) -> None:
    with pytest.raises(models.QueryError):
        models.parse_q(q)
