"""The server side: storage (data layer), ingest and api (application layer), kpi (business
layer), and devstack (the real services `make up` and the tests start on one machine).

Importing this package imports nothing else: the ``urbanpulse`` command lives in
``services.cli`` and loads each subcommand lazily, so gateway commands run without the
server extra installed.

Shared by every process: ``settings.py`` (the ``URBANPULSE_*`` settings, built once in each
command's ``main`` or ``create_app`` and passed down) and ``errors.py`` (:class:`DomainError`, the
base of each package's error base, carrying the HTTP status, problem type and field at fault that
the API answers with in one handler, ``services.api.problems``).
"""
