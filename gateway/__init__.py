"""The sensing side's wire contract and field gateway.

Holds what a field device needs and nothing more: the SenML (RFC 8428) codec, the MQTT topic
scheme, the sensor-kind catalog shared by simulators, gateways and the ingestion validator,
and (later) the gateway process with its on-disk outbox. Imports no server library and
nothing from ``services``; it installs with ``pip install urbanpulse[gateway]``. Its errors
share one base, ``errors.GatewayError``: the wire contract's (``WireError``, the sender's fault)
and the gateway's own (``OutboxError``, ``DriverError``, ``ReceiptError``).
"""
