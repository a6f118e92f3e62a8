"""The registry: districts, gateways and sensors, and the one owner of their SQL.

Three modules behind this front (import from ``services.storage.registry``):

- ``fields``: the rows (``DistrictRow``, ``GatewayRow``, ``SensorRow``) and the per-field checks
  (units, plausible values, ids, kinds); pure.
- ``manifest``: bulk registration from a manifest, all or nothing (``parse`` is pure, ``load``
  writes); what ``urbanpulse registry load`` and ``POST /v1/registry/bulk`` run.
- ``tables``: every statement on the registry's tables: ``districts``, ``gateways`` and
  ``sensors`` (find, get, insert, update, upsert, with column names from the schema), the one
  reference check (``unknown_references``), retiring, and what the ingestion worker writes
  (``add_pending_sensors``, ``record_gateway_status``).

The API's registry routes, the manifest load and the ingestion worker call these; no other
module writes a registry row. (The city settings' per-district overrides, ``districts.reference``,
are written by ``services.storage.city_settings``, which owns those settings.)
"""

from .fields import (
    Count,
    DistrictRow,
    FieldsError,
    GatewayRow,
    Row,
    SensorRow,
    check_district_fields,
    check_sensor_fields,
    json_number,
)
from .manifest import LoadResult, ManifestError, RowError, load, parse, read_manifest
from .tables import (
    RegistryTable,
    add_pending_sensors,
    districts,
    gateways,
    record_gateway_status,
    retire_gateway,
    retire_sensor,
    sensors,
    unknown_references,
)

__all__ = [
    "Count",
    "DistrictRow",
    "FieldsError",
    "GatewayRow",
    "LoadResult",
    "ManifestError",
    "RegistryTable",
    "Row",
    "RowError",
    "SensorRow",
    "add_pending_sensors",
    "check_district_fields",
    "check_sensor_fields",
    "districts",
    "gateways",
    "json_number",
    "load",
    "parse",
    "read_manifest",
    "record_gateway_status",
    "retire_gateway",
    "retire_sensor",
    "sensors",
    "unknown_references",
]
