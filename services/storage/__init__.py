"""The data layer: schema, migrations, partitions or hypertables, rollups, retention, and the
idempotent COPY write path. Imports nothing from the other service packages."""
