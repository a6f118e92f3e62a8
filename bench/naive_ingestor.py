"""A naive MQTT-to-PostgreSQL ingestor, written the way most tutorials do: the baseline.

paho's message callback parses each SenML pack with ``json.loads``, resolves base name, time
and unit by hand, and runs one INSERT per reading on an autocommit connection (so one commit,
and one WAL flush, per reading). The sensor and quantity keys are looked up by sub-selects in
the INSERT itself. paho acknowledges each message when the callback returns. No batching, no
validation, no quarantine: what a user would write without UrbanPulse.

bench/bench_ingest.py runs it as a child process; it prints ``ready`` once subscribed.

    .venv/bin/python bench/naive_ingestor.py --database-url URL --mqtt-url URL [--topic T]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

INSERT = (
    "INSERT INTO readings (time, sensor_key, quantity_key, value) VALUES ("
    "to_timestamp(%s), (SELECT key FROM sensors WHERE id = %s), "
    "(SELECT key FROM quantities WHERE name = %s), %s)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--mqtt-url", required=True)
    parser.add_argument("--topic", default="ssc/v1/+/up")
    args = parser.parse_args()

    db = psycopg.connect(args.database_url, autocommit=True)

    def on_message(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            pack = json.loads(msg.payload)
            base_name, base_time = "", 0.0
            for record in pack:
                base_name = record.get("bn", base_name)
                base_time = record.get("bt", base_time)
                name = base_name + record.get("n", "")
                sensor_id, _, quantity = name.rpartition("/")
                db.execute(
                    INSERT, (base_time + record.get("t", 0.0), sensor_id, quantity, record["v"])
                )
        except Exception as exc:  # the tutorial way: print and carry on
            print(f"error: {exc}", file=sys.stderr)

    def on_subscribe(*_args: object) -> None:
        print("ready", flush=True)

    url = urlsplit(args.mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="naive-ingestor")
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *_: c.subscribe(args.topic, qos=1)
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client.loop_start()
    stop.wait()
    client.loop_stop()
    db.close()


if __name__ == "__main__":
    main()
