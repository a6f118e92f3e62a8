"""A real MQTT broker on 127.0.0.1: Mosquitto when it is on PATH, otherwise iotcore's rumqttd.

Mosquitto is started with the settings the delivery guarantee needs (``GUARANTEE_SETTINGS``,
the same as ``deploy/mosquitto/mosquitto.conf``) and with persistence, so a restart keeps
sessions and queued messages.

The fallback, rumqttd embedded in the ``iotcore`` wheel, serves MQTT 5 and 3.1.1 (on separate
ports) and shared subscriptions, but measured here (paho-mqtt 2.2, iotcore 0.4) it has no
persistence, a fixed window of 100 unacknowledged messages, ignores session expiry, and drops a
client that acknowledges out of order. ``capabilities`` says so, and tests that need more skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from gateway.limits import MAX_PACK_BYTES

from .postgres import free_port

# The lines of deploy/mosquitto/mosquitto.conf marked "guarantee" (a test keeps them equal).
GUARANTEE_SETTINGS = {
    "max_queued_messages": "0",
    "max_queued_bytes": "0",
    "max_inflight_messages": "1000",
    "persistence": "true",
}


class BrokerError(RuntimeError):
    """The broker could not be started; the message says why and where its log is."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    persistence: bool  # sessions and queued messages survive a restart
    window: int  # unacknowledged QoS 1 messages a subscriber may hold
    session_expiry: bool  # honours SessionExpiryInterval
    out_of_order_acks: bool
    # Shared subscriptions of persistent sessions survive a restart (Mosquitto >= 2.0.19).
    shared_subscriptions_persist: bool = False


class Broker(Protocol):
    kind: str
    host: str
    port: int
    capabilities: Capabilities

    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...


def _wait_listening(
    host: str, port: int, process: subprocess.Popen[bytes] | None, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"broker exited with {process.returncode}; see {log}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise BrokerError(f"broker did not listen on {host}:{port} within {timeout}s; see {log}")


def _wait_closed(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                time.sleep(0.02)
        except OSError:
            return
    raise BrokerError(f"port {port} still open after the broker stopped")


class Mosquitto:
    kind = "mosquitto"
    capabilities = Capabilities(
        persistence=True, window=1000, session_expiry=True, out_of_order_acks=True
    )
    version: tuple[int, ...] = ()

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        executable: str | None = None,
        extra_config: str = "",
    ) -> None:
        """``extra_config``: lines appended to the generated config (e.g. a TLS listener)."""
        self.host = "127.0.0.1"
        self.extra_config = extra_config
        self.port = port or free_port()
        self._temporary = data_dir is None
        self.data_dir = Path(
            tempfile.mkdtemp(prefix="urbanpulse-mqtt-") if data_dir is None else data_dir
        ).absolute()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        found = executable or find_mosquitto()
        if found is None:
            raise BrokerError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.executable = found
        self.version = mosquitto_version(found)
        self.capabilities = replace(
            Mosquitto.capabilities, shared_subscriptions_persist=self.version >= (2, 0, 19)
        )
        self.config = self.data_dir / "mosquitto.conf"
        self.log = self.data_dir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # As root Mosquitto drops to the `mosquitto` user, which then cannot write its
            # persistence file into our directory: sessions would vanish at restart.
            f"user {'root' if os.geteuid() == 0 else os.environ.get('USER', 'nobody')}",
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            # A crash loses what arrived since the last save; SIGTERM always saves.
            "autosave_interval 5",
            "queue_qos0_messages false",
            # As deploy/: a pack past the platform's limit is refused at the broker.
            f"max_packet_size {MAX_PACK_BYTES}",
            "set_tcp_nodelay true",
            "connection_messages true",
            "log_dest stderr",
            *(f"{key} {value}" for key, value in GUARANTEE_SETTINGS.items()),
        ]
        if self.extra_config:
            # Last, so that listener blocks it opens get the options that follow them.
            lines.append(self.extra_config.rstrip("\n"))
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [self.executable, "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        _wait_listening(self.host, self.port, self._process, timeout, self.log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM saves sessions and queues to disk; SIGKILL is a crash."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _wait_closed(self.host, self.port)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)


_RUMQTTD_CONFIG = """\
id = 0

[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
# The offline queue is what is left in the per-filter commit log: 1 GiB before the oldest go.
max_segment_size = 104857600
max_segment_count = 10
shared_subscriptions_strategy = "roundrobin"

[v5.1]
name = "v5-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
    [v5.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = {max_packet_size}
    max_inflight_count = 1000
    dynamic_filters = true

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port_v4}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = {max_packet_size}
    max_inflight_count = 1000
    dynamic_filters = true
"""


class Rumqttd:
    """rumqttd from the ``iotcore`` wheel, in a child process; ``port`` speaks MQTT 5."""

    kind = "rumqttd (iotcore)"
    capabilities = Capabilities(
        persistence=False, window=100, session_expiry=False, out_of_order_acks=False
    )

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        from iotcore import Broker as IotcoreBroker

        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.port_v4 = free_port()
        self._temporary = data_dir is None
        self.data_dir = Path(
            tempfile.mkdtemp(prefix="urbanpulse-mqtt-") if data_dir is None else data_dir
        ).absolute()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "rumqttd.toml"
        config.write_text(
            _RUMQTTD_CONFIG.format(
                port=self.port, port_v4=self.port_v4, max_packet_size=MAX_PACK_BYTES
            )
        )
        self._broker = IotcoreBroker(config_path=str(config))
        self._running = False

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if not self._running:
            self._broker.start(timeout)
            _wait_listening(self.host, self.port, None, timeout, self.data_dir)
            self._running = True

    def stop(self) -> None:
        if self._running:
            self._broker.stop()
            _wait_closed(self.host, self.port)
            self._running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def mosquitto_version(executable: str) -> tuple[int, ...]:
    """``(2, 0, 11)`` from the first line of ``mosquitto -h``; ``()`` if it says none."""
    result = subprocess.run([executable, "-h"], capture_output=True, text=True, check=False)
    match = re.search(r"version (\d+(?:\.\d+)+)", result.stdout + result.stderr)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def find_mosquitto() -> str | None:
    """Mosquitto's executable: on PATH, or where Debian puts it (/usr/sbin is not on a normal
    user's PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def start_broker(data_dir: Path | None = None, port: int | None = None) -> Mosquitto | Rumqttd:
    """Start Mosquitto if it is installed, else the embedded rumqttd; return it running."""
    executable = find_mosquitto()
    broker: Mosquitto | Rumqttd
    broker = Mosquitto(data_dir, port, executable) if executable else Rumqttd(data_dir, port)
    broker.start()
    return broker
