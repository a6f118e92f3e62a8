"""Panel and variable factories shared by the dashboards: one look for the whole set.

Every panel takes its SQL through :func:`dashboards.sql.raw_sql`; the panel type decides the
query format (time series for charts, table for the rest), which the query tests check.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, common, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from services.kpi.catalog import Better, Kpi

from .sql import DATASOURCE, raw_sql

GREEN, ORANGE, RED, BLUE = "green", "orange", "red", "blue"


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in pairs])
    )


def band_thresholds(kpi: Kpi) -> db.ThresholdsConfig:
    """The catalog band as colours: met green, warning orange, missed red (``KPIS.md``)."""
    band = kpi.band
    if kpi.better is Better.LOWER:
        return steps((None, GREEN), (band.target, ORANGE), (band.warning, RED))
    return steps((None, RED), (band.warning, ORANGE), (band.target, GREEN))


def text_color() -> list[dm.DynamicConfigValue]:
    """Override for a secondary field of a stat (target, baseline change): plain text colour."""
    return [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "text"})]


def kpi_stat(kpi: Kpi, sql: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(f"{kpi.id} {kpi.name}")
        .description(f"{kpi.definition} Follows: {kpi.follows}. Unit: {kpi.unit}.")
        .datasource(DATASOURCE)
        .with_target(raw_sql(sql, "table"))
        .thresholds(band_thresholds(kpi))
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields(""))
        .no_value("insufficient data")
        .decimals(2)
        .override_by_name("target", text_color())
        .override_by_name("vs baseline %", text_color())
        .height(5)
        .span(6)
    )


def stat_panel(title: str, sql: str, unit: str, thresholds: db.ThresholdsConfig) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(raw_sql(sql, "table"))
        .unit(unit)
        .thresholds(thresholds)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields(""))
        .height(5)
        .span(6)
    )


def chart(
    title: str,
    sql: str,
    unit: str,
    *,
    description: str = "",
    thresholds: db.ThresholdsConfig | None = None,
    bars: bool = False,
    time_from: str | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(raw_sql(sql, "time_series"))
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .span_nulls(False)
        .height(8)
        .span(12)
    )
    if thresholds is not None:
        # WHO lines and limits drawn on the chart, not only coloured.
        panel = panel.thresholds(thresholds).thresholds_style(
            common.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)
        )
    if bars:
        panel = panel.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(60)
    if time_from is not None:
        panel = panel.time_from(time_from)
    return panel


def table_panel(title: str, sql: str, *, description: str = "", span: int = 12) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(raw_sql(sql, "table"))
        .height(8)
        .span(span)
    )


def bars(title: str, sql: str, unit: str, thresholds: db.ThresholdsConfig) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(raw_sql(sql, "table"))
        .unit(unit)
        .min(0)
        .max(1)
        .thresholds(thresholds)
        .reduce_options(common.ReduceDataOptions().values(True).fields("/.*/"))
        .height(8)
        .span(12)
    )


def status_map(
    title: str,
    sql: str,
    color_field: str,
    thresholds: db.ThresholdsConfig,
    mappings: list[dm.ValueMapping] | None = None,
) -> geomap.Panel:
    """Markers at each row's latitude/longitude, coloured by ``color_field`` through
    ``thresholds`` (and named through ``mappings``)."""
    layer = (
        common.MapLayerOptions()
        .type("markers")
        .name("status")
        .location(
            common.FrameGeometrySource()
            .mode(cm.FrameGeometrySourceMode.COORDS)
            .latitude("latitude")
            .longitude("longitude")
        )
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": color_field, "fixed": "dark-green"},
                    "size": {"fixed": 6, "min": 4, "max": 12},
                    "opacity": 0.8,
                    "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                },
            }
        )
        .tooltip(True)
    )
    panel = (
        geomap.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(raw_sql(sql, "table"))
        .view(geomap.MapViewConfig().id("fit").zoom(13).all_layers(True))
        .layers([layer])
        .thresholds(thresholds)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .height(12)
        .span(12)
    )
    if mappings:
        panel = panel.mappings(mappings)
    return panel


def named(values: dict[float, tuple[str, str]]) -> list[dm.ValueMapping]:
    """Value mappings: a number to a word and a colour, so colour is never the only cue."""
    return [
        dm.ValueMap(
            options={
                str(int(v)): dm.ValueMappingResult(text=text, color=color, index=i)
                for i, (v, (text, color)) in enumerate(values.items())
            }
        )
    ]


def district_variable() -> db.QueryVariable:
    return (
        db.QueryVariable("district")
        .label("District")
        .datasource(DATASOURCE)
        .query("SELECT id AS __value, name AS __text FROM districts ORDER BY id")
        .multi(True)
        .include_all(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
    )


DOMAINS = ("water", "energy", "waste", "traffic", "environment")


def domain_variable() -> db.CustomVariable:
    return (
        db.CustomVariable("domain")
        .label("Domain")
        .values(",".join(DOMAINS))
        .multi(True)
        .include_all(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .options([dm.VariableOption(selected=False, text=d, value=d) for d in DOMAINS])
    )


def sensor_variable(name: str, label: str, kind: str) -> db.QueryVariable:
    """Sensors of one kind in the chosen districts (a chart with one line each)."""
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(
            f"SELECT id FROM sensors WHERE kind = '{kind}' AND status = 'active' "
            "AND district_id IN (${district:sqlstring}) ORDER BY id"
        )
        .multi(True)
        .include_all(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
    )


def period_variable() -> db.CustomVariable:
    return (
        db.CustomVariable("period")
        .label("KPI period")
        .values("day,month,year")
        .current(dm.VariableOption(selected=True, text="day", value="day"))
        .options(
            [
                dm.VariableOption(selected=p == "day", text=p, value=p)
                for p in ("day", "month", "year")
            ]
        )
    )
