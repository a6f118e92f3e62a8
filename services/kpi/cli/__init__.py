"""The KPI package's commands, one module per ``urbanpulse`` subcommand: ``kpi.py`` (values,
baselines, targets), ``alerts.py`` (alerts and rules), ``erase.py`` (a sensor's readings, audited)
and ``monitor.py`` (the monitor loop). ``services/cli.py`` wires them."""
