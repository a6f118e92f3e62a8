"""``services.storage.kpi_current`` owns the current KPI values' table: the names other modules'
SQL reads it by (the alert rules' ``kpi_band``, the dashboards' panels) are the schema's."""

from __future__ import annotations

from services.storage import kpi_current, schema


def test_the_owner_names_its_table_and_every_column_as_the_schema_does() -> None:
    assert schema.kpi_current.name == kpi_current.TABLE
    assert tuple(column.name for column in schema.kpi_current.columns) == kpi_current.COLUMNS
