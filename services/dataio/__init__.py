"""Data in and out: history import (CSV, JSON lines of SenML packs, Parquet) through the live
path's validation and idempotent writer, and open-data export (readings at a rollup, KPI values,
a DCAT-AP described bundle). Its errors (``errors.py``, ``DataIoError``: a bad file, option or
period) say how the API answers them. May import services.ingest, services.storage and
services.kpi."""
