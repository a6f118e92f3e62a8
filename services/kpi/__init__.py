"""The business layer: the KPI catalog (plain data) and the computations over the rollups.

May import ``services.storage``."""
