"""The simulator's settings: the broker it publishes to (``URBANPULSE_`` environment variables).

The same variable names as the server's settings (``URBANPULSE_MQTT_URL``, ``_USERNAME``,
``_PASSWORD``) but not its class: the field side never imports ``services``.
"""

from __future__ import annotations

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

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must be an mqtt:// or mqtts:// URL")
        return value

    def publisher_options(self, gateway_id: str) -> PublisherOptions:
        url = urlsplit(self.mqtt_url)
        tls = url.scheme == "mqtts"
        username = self.mqtt_username or (unquote(url.username) if url.username else None)
        password = (
            self.mqtt_password.get_secret_value()
            if self.mqtt_password is not None
            else (unquote(url.password) if url.password else None)
        )
        return PublisherOptions(
            gateway_id=gateway_id,
            host=url.hostname or "127.0.0.1",
            port=url.port or (8883 if tls else 1883),
            username=username,
            password=password,
            tls=TLSOptions() if tls else None,
        )
