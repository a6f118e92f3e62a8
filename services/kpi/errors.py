"""The KPI engine's errors: bad input, the caller's mistake.

``KpiError`` is the base; each error carries its subject as data and, as a
:class:`~services.errors.DomainError`, how the API answers it (a 404 for a KPI it does not
compute, a 422 naming the query parameter at fault for the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from services.errors import DomainError, query_field


class KpiError(DomainError, ValueError):
    """Bad input to the engine (the caller's mistake, reported as a 4xx by the API)."""


# The names without an "Error" suffix are the API's contract with the engine.
class UnknownKpi(KpiError):  # noqa: N818
    status = 404

    def __init__(self, kpi_id: str, reason: str = "not in the KPI catalog") -> None:
        super().__init__(f"unknown KPI {kpi_id!r}: {reason}")
        self.kpi_id = kpi_id


# The argument of the engine (and the API's query parameter) a period error is about; None when
# it is the city's timezone, not an argument.
PeriodArgument = Literal["period", "at", "start", "end", "grain"]


class InvalidPeriod(KpiError):  # noqa: N818
    def __init__(self, reason: str, argument: PeriodArgument | None = None) -> None:
        super().__init__(f"invalid period: {reason}")
        self.reason = reason
        self.argument = argument

    @property
    def request_field(self) -> str | None:
        return query_field(self.argument)


class UnknownDistrict(KpiError):  # noqa: N818
    def __init__(self, district_ids: Sequence[str]) -> None:
        super().__init__(f"unknown district(s): {', '.join(district_ids)}")
        self.district_ids = tuple(district_ids)

    @property
    def request_field(self) -> str | None:
        return query_field("district")


class InvalidTarget(KpiError):  # noqa: N818
    def __init__(self, kpi_id: str, reason: str) -> None:
        super().__init__(reason)
        self.kpi_id = kpi_id
