"""The API's routers, one module per resource, all mounted under ``/v1`` by ``services.api.app``."""
