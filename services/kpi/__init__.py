"""The business layer: the KPI catalog (plain data, ``catalog.py``), one SQL computation per KPI
over the rollups (``queries/``), rating, coverage and periods (``engine.py``), baselines
(``baseline.py``), alert rules and their evaluation (``alerts/``) and the monitor loop that keeps
the current values and alerts fresh (``monitor.py``).

May import ``services.storage``."""
