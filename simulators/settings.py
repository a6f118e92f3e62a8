"""The simulator's settings: the broker it publishes to (``URBANPULSE_`` environment variables).

The same variable names as the server's settings (``URBANPULSE_MQTT_URL``, ``_USERNAME``,
``_PASSWORD``) but not its class: the field side never imports ``services``.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.publisher import PublisherOptions, TLSOptions


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="URBANPULSE_", extra="ignore")

    mqtt_url: str = Field(
        default="mqtt://127.0.0.1:1883", description="mqtt://[user:password@]host:port or mqtts://"
    )
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_credentials_file: Path | None = Field(
        default=None,
        description="JSON map of gateway id -> password (what `make up` keeps in "
        ".urbanpulse/broker/credentials.json): each gateway logs in as itself, as a broker "
        "with per-gateway identities and an ACL requires",
    )

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must be an mqtt:// or mqtts:// URL")
        return value

    def gateway_passwords(self) -> dict[str, str]:
        """The credentials file's gateway id -> password map ({} without one)."""
        if self.mqtt_credentials_file is None:
            return {}
        path = self.mqtt_credentials_file
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"MQTT credentials file {path}: {exc}") from None
        if not isinstance(known, dict) or not all(
            isinstance(name, str) and isinstance(password, str) for name, password in known.items()
        ):
            raise ValueError(f"MQTT credentials file {path} must map gateway ids to passwords")
        return known

    def publisher_options(
        self, gateway_id: str, passwords: dict[str, str] | None = None
    ) -> PublisherOptions:
        """How ``gateway_id`` reaches the broker: as itself when ``passwords`` (from
        :meth:`gateway_passwords`) has it, else with the shared user name and password."""
        url = urlsplit(self.mqtt_url)
        tls = url.scheme == "mqtts"
        username = self.mqtt_username or (unquote(url.username) if url.username else None)
        password = (
            self.mqtt_password.get_secret_value()
            if self.mqtt_password is not None
            else (unquote(url.password) if url.password else None)
        )
        if passwords:
            if gateway_id not in passwords:
                raise ValueError(
                    f"gateway {gateway_id} has no password in {self.mqtt_credentials_file}; "
                    f'add "{gateway_id}": "<password>" there (and restart the broker)'
                )
            username, password = gateway_id, passwords[gateway_id]
        return PublisherOptions(
            gateway_id=gateway_id,
            host=url.hostname or "127.0.0.1",
            port=url.port or (8883 if tls else 1883),
            username=username,
            password=password,
            tls=TLSOptions() if tls else None,
        )
