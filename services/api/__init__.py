"""The application layer's HTTP API (FastAPI, under ``/v1``).

May import ``services.kpi`` and ``services.storage``."""
