"""A registry row's fields are the schema's columns: the row models are checked against it.

The schema (``services.storage.schema``) is the one spelling of a table's columns; the registry's
tables derive what they read and write from it, and these tests fail when a row model and the
schema part (a column added to one and not the other, a required field the database defaults).
"""

from __future__ import annotations

import pytest

from services.storage import registry
from services.storage.registry import DistrictRow, GatewayRow, RegistryTable, Row, SensorRow

ROWS = [
    pytest.param(registry.districts, DistrictRow, id="districts"),
    pytest.param(registry.gateways, GatewayRow, id="gateways"),
    pytest.param(registry.sensors, SensorRow, id="sensors"),
]

# Not null in the table, yet optional in a row: the registry sets it (a sensor's domain is its
# kind's).
DERIVED = {("sensors", "domain")}


@pytest.mark.parametrize(("table", "row"), ROWS)
def test_a_row_model_holds_exactly_the_columns_a_row_sets(
    table: RegistryTable, row: type[Row]
) -> None:
    # A name in maintained or hidden that is no column (a typo) would let a write set it.
    assert table.maintained | table.hidden < {c.name for c in table.table.columns}
    assert set(row.model_fields) == table.writable


@pytest.mark.parametrize(("table", "row"), ROWS)
def test_a_field_is_required_exactly_where_the_table_has_no_default(
    table: RegistryTable, row: type[Row]
) -> None:
    for name, field in row.model_fields.items():
        column = table.table.columns[name]
        no_default = not column.nullable and column.server_default is None
        if (table.table.name, name) in DERIVED:
            assert no_default, name
            assert not field.is_required(), name
        else:
            assert field.is_required() == no_default, name
