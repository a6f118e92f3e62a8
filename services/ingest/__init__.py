"""The ingestion service: MQTT to the data layer, at least once, exactly once in the table.

May import ``gateway`` (the wire contract) and ``services.storage``."""
