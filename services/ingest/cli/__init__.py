"""The ingestion package's commands, one module per ``urbanpulse`` subcommand: ``ingest.py``
(``urbanpulse ingest``, run a worker) and ``quarantine.py`` (``urbanpulse quarantine``, list,
show and replay). ``services/cli.py`` wires them."""
