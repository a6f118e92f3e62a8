"""The data layer: schema, migrations, partitions or hypertables, rollups, retention, and the
idempotent COPY write path; and the modules that own a family of tables' SQL, which the other
layers call: the registry of districts, gateways and sensors (``registry/``: the rows and their
checks, the manifest load, and ``tables.py``, every statement that registers, changes or retires
a row), the city settings (``city_settings.py``, with their typed ``CitySettings``), KPI
targets and baselines (``kpi_targets.py``), the current KPI values (``kpi_current.py``), the
event log (``events.py``), the pack ledger (``ledger.py``), the quarantine
(``quarantine.py``: store, list and count under one ``QuarantineFilter``, prune, a replay's claim
and marks; what a replay decides is ingestion's). SQL elsewhere (the alert rules, the
dashboards' panels) reads ``kpi_current`` by the names ``kpi_current.py`` owns. Its errors
(``errors.py``, ``StorageError``) say how the API answers them. Its commands are in ``cli/``
(``urbanpulse db``, ``registry``, ``retention``, ``city``, ``district``). Imports nothing from
the other service packages."""
