"""KPI computations of the environment domain (see ../catalog.py)."""

from __future__ import annotations

from collections.abc import Mapping

from ..model import Computation

COMPUTATIONS: Mapping[str, Computation] = {}
