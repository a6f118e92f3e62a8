"""KPI computations of the water domain (see ../catalog.py)."""

from __future__ import annotations

from collections.abc import Mapping

from ..model import Computation

COMPUTATIONS: Mapping[str, Computation] = {}
