"""The ingestion service: MQTT to the data layer, at least once, exactly once in the table.

``worker.py`` is the shell (its configuration, the batching loop and the threads, and
acknowledging and sending receipts after each commit); ``session.py`` the MQTT 5 session (a compiled
codec, ``mqtt5``, under our own connection handling: connect, subscribe, deliver, keep alive,
acknowledge a batch in one write with the receiving connection's ids, publish receipts);
``commit.py`` the transaction (pack ledger, quarantine rows, registry updates, readings, the
conflict fallback, retried while the database is away); ``decode.py`` its pure core (decode,
validate, salvage: bytes, a registry snapshot and a clock in, rows and quarantine entries out;
``validate_pack`` for one pack), over ``salvage.py`` and ``validate.py``; ``retry.py`` the one
retry policy for database work; ``metrics.py`` its Prometheus metrics and plain counts;
``sensor_directory.py`` the worker's sensor directory; ``quarantine.py`` the quarantine's pure
rules (the entries a message makes, and replay's decisions; the tables are storage's).

Its commands are in ``cli/`` (``urbanpulse ingest``, ``urbanpulse quarantine``).

May import ``gateway`` (the wire contract) and ``services.storage``."""
