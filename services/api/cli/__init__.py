"""The API package's commands, one module per ``urbanpulse`` subcommand: ``api.py`` (``urbanpulse
api``, serve the HTTP API) and ``keys.py`` (``urbanpulse keys``, API keys). ``services/cli.py``
wires them."""
