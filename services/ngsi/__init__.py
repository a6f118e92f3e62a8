"""FIWARE Smart Data Models and NGSI-LD: pure mappings of sensors, readings and KPI values to
NGSI-LD entities (``models``); the read-only API over them is ``services.api.routes.ngsi``."""
