"""The application layer's HTTP API (FastAPI, under ``/v1``).

``app.py`` builds it (``create_app(settings)``); ``routes/`` holds one module per resource;
``problems.py`` turns every error into an RFC 9457 problem, the domain's errors
(``services.errors.DomainError``) in one handler, so routes do not translate them;
``kpi_cache.py`` is the cache of computed KPI answers and ``kpi_models.py`` the KPI bodies (held to
the engine's types by a test); ``auth.py``, ``keys.py``, ``guards.py``, ``deps.py`` the keys,
limits and dependencies every route shares.

Its commands are in ``cli/`` (``urbanpulse api``, ``urbanpulse keys``).

May import ``services.kpi`` and ``services.storage`` (and ``services.dataio`` for history
imports), never ``services.ingest`` directly; the packages it imports never import
FastAPI (an import-linter contract)."""
