"""FIWARE Smart Data Models and NGSI-LD: pure mappings of sensors, readings and KPI values to
NGSI-LD entities and the ``q``/``idPattern`` filters (``models``), geo-queries (``geo``); the
read-only API over them is ``services.api.routes.ngsi``."""
