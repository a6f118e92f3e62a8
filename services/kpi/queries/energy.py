"""KPI computations of the energy domain (see ../catalog.py)."""

from __future__ import annotations

from collections.abc import Mapping

from ..model import Computation

COMPUTATIONS: Mapping[str, Computation] = {}
