"""The data layer's commands, one module per ``urbanpulse`` subcommand: ``db.py`` (``urbanpulse
db``: migrations, mode, rollups), ``registry.py`` (``urbanpulse registry``: load a manifest),
``retention.py`` (``urbanpulse retention``) and ``settings.py`` (``urbanpulse city`` and
``urbanpulse district``). ``services/cli.py`` wires them."""
