"""The business layer: the KPI catalog (plain data, ``catalog.py``), one SQL computation per KPI
over the rollups (``queries/``), the engine that runs and rates them (``engine.py``, the front)
over its pure parts (``periods.py`` calendar arithmetic, ``rating.py`` coverage, bands and
rating, ``errors.py`` bad input, each error saying how the API answers it), baselines
(``baseline.py``), alert rules and their evaluation (``alerts/``) and the monitor loop that
keeps the current values and alerts fresh (``monitor.py``). The KPI tables' SQL lives in the
data layer (``services.storage.kpi_current``).

Its commands are in ``cli/`` (``urbanpulse kpi``, ``alerts``, ``erase``, ``monitor``).

May import ``services.storage``.
"""
