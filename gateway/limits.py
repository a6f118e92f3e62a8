"""What one message of the wire contract may hold: the platform's pack limit.

The brokers we ship refuse a larger MQTT packet (``max_packet_size`` in
deploy/mosquitto/mosquitto.conf and in the brokers ``services.devstack.broker`` starts, kept
equal to ``MAX_PACK_BYTES`` by a test), and ingestion quarantines what a broker let through
beyond these limits as one entry rather than paying for every record of it.
"""

from __future__ import annotations

MAX_PACK_BYTES = 1_048_576
"""An MQTT packet carrying a pack, topic and headers included (the broker's max_packet_size)."""

MAX_PACK_RECORDS = 5_000
"""Records in one pack (a gateway sends 100 by default, a backfill about 180 a sensor-hour)."""
