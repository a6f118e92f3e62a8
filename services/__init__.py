"""The server side: storage (data layer), ingest and api (application layer), kpi (business
layer), and devstack (the real services `make up` and the tests start on one machine).

Importing this package imports nothing else: the ``urbanpulse`` command lives in
``services.cli`` and loads each subcommand lazily, so gateway commands run without the
server extra installed.
"""
