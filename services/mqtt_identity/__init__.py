"""Per-gateway identities at the MQTT broker: Mosquitto's password file and ACL, generated
from the registry (``urbanpulse mqtt credentials``)."""
