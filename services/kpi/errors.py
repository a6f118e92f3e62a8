"""The KPI engine's errors: bad input, the caller's mistake (reported as a 4xx by the API)."""

from __future__ import annotations

from collections.abc import Sequence


class KpiError(ValueError):
    """Bad input to the engine (the caller's mistake, reported as a 4xx by the API)."""


# The names without an "Error" suffix are the API's contract with the engine.
class UnknownKpi(KpiError):  # noqa: N818
    def __init__(self, kpi_id: str, reason: str = "not in the KPI catalog") -> None:
        super().__init__(f"unknown KPI {kpi_id!r}: {reason}")
        self.kpi_id = kpi_id


class InvalidPeriod(KpiError):  # noqa: N818
    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid period: {reason}")
        self.reason = reason


class UnknownDistrict(KpiError):  # noqa: N818
    def __init__(self, district_ids: Sequence[str]) -> None:
        super().__init__(f"unknown district(s): {', '.join(district_ids)}")
        self.district_ids = tuple(district_ids)


class InvalidTarget(KpiError):  # noqa: N818
    def __init__(self, kpi_id: str, reason: str) -> None:
        super().__init__(reason)
        self.kpi_id = kpi_id
