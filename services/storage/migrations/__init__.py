"""Alembic migrations of the data layer (run with ``urbanpulse db upgrade``)."""
