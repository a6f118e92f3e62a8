"""/v1/settings and /v1/districts/{id}/settings: the settings the KPIs use, read and set.

Everyone with ``read`` reads. City settings (timezone, peak periods, overflow threshold, major
road classes, sustained-outage limit, the grid's renewable fraction) need ``settings:write``
(admins); a district's overrides (peak periods, overflow threshold, renewable fraction: what
``KPIS.md`` marks "(registry)") are registry data and need ``registry:write`` (engineers).
``PUT`` takes ``{"value": ...}``: a number with a unit as ``"5 min"`` or
``{"value": 5, "unit": "min"}``, peak periods as ``[["07:00", "09:30"], ...]`` or
``"07:00-09:30,16:00-18:30"``; a refused value is a 422 naming ``body.value`` with the reason.
``DELETE`` returns to the default (the city's value, for a district). The settings store's
refusals pass through as they describe themselves (``services.storage.city_settings``): an
unknown name or district is a 404, a setting a district does not override a 422 on the path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from services.storage import city_settings as cs

from ..deps import Conn, ReadConn, Reader, RegistryWriter, SettingsWriter
from ..problems import responses

router = APIRouter(tags=["settings"])

SettingName = Annotated[str, Path(max_length=64, examples=["peak_periods"])]
DistrictId = Annotated[str, Path(max_length=64, examples=["centre"])]


class SettingValue(BaseModel):
    name: str = Field(examples=["sustained_outage_s"])
    value: Any = Field(description="in the canonical unit", examples=[300.0])
    unit: str | None = Field(description="the canonical unit; null: none", examples=["s"])
    source: Literal["default", "city", "district"] = Field(
        description="where the value in effect comes from"
    )
    default: Any = Field(description="the value of a city that set nothing")
    district_override: bool = Field(description="a district may set its own")
    description: str


class SettingList(BaseModel):
    items: list[SettingValue]


class SettingBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"value": "5 min"},
                {"value": {"value": 90, "unit": "%"}},
                {"value": "07:00-09:30,16:00-18:30"},
                {"value": "Europe/Rome"},
            ]
        },
    )

    value: Any = Field(description="the new value; a number may carry a unit")


def _shown(value: cs.Value) -> SettingValue:
    setting = cs.SETTINGS[value.name]
    return SettingValue(
        name=value.name,
        value=value.value,
        unit=setting.unit or None,
        source=value.source,
        default=setting.default,
        district_override=setting.district,
        description=setting.description,
    )


@router.get("/settings", response_model=SettingList, responses=responses(401, 403))
def list_settings(conn: ReadConn, _: Reader) -> SettingList:
    """Every city setting in effect, with its unit, default and where it comes from."""
    return SettingList(items=[_shown(v) for v in cs.city_values(conn)])


@router.get(
    "/settings/{name}", response_model=SettingValue, responses=responses(401, 403, 404, 422)
)
def get_setting(conn: ReadConn, _: Reader, name: SettingName) -> SettingValue:
    cs.setting(name)
    return next(_shown(v) for v in cs.city_values(conn) if v.name == name)


@router.put(
    "/settings/{name}", response_model=SettingValue, responses=responses(401, 403, 404, 422)
)
def put_setting(
    conn: Conn, _: SettingsWriter, name: SettingName, body: SettingBody
) -> SettingValue:
    """Set a city setting (admins)."""
    return _shown(cs.set_city(conn, name, body.value))


@router.delete(
    "/settings/{name}", response_model=SettingValue, responses=responses(401, 403, 404, 422)
)
def delete_setting(conn: Conn, _: SettingsWriter, name: SettingName) -> SettingValue:
    """Return a city setting to its default (admins)."""
    return _shown(cs.unset_city(conn, name))


@router.get(
    "/districts/{district_id}/settings",
    response_model=SettingList,
    responses=responses(401, 403, 404, 422),
)
def list_district_settings(conn: ReadConn, _: Reader, district_id: DistrictId) -> SettingList:
    """The settings a district may override, each the district's own or else the city's."""
    return SettingList(items=[_shown(v) for v in cs.district_values(conn, district_id)])


@router.put(
    "/districts/{district_id}/settings/{name}",
    response_model=SettingValue,
    responses=responses(401, 403, 404, 422),
)
def put_district_setting(
    conn: Conn, _: RegistryWriter, district_id: DistrictId, name: SettingName, body: SettingBody
) -> SettingValue:
    """Override a city setting for one district (engineers)."""
    return _shown(cs.set_district(conn, district_id, name, body.value))


@router.delete(
    "/districts/{district_id}/settings/{name}",
    response_model=SettingValue,
    responses=responses(401, 403, 404, 422),
)
def delete_district_setting(
    conn: Conn, _: RegistryWriter, district_id: DistrictId, name: SettingName
) -> SettingValue:
    """Drop a district's override: the city's value applies again (engineers)."""
    return _shown(cs.unset_district(conn, district_id, name))
