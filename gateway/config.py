"""The gateway's settings: a TOML file (``--config``) plus ``URBANPULSE_GATEWAY_*`` variables.

The environment overrides the file, which overrides the defaults, so a deployment ships one file
and a secret (``URBANPULSE_GATEWAY_PASSWORD``) comes from the environment. Keys in the file are
the field names below, flat (``gateway_id = "gw-d01-water"``, ``broker_url = "mqtts://..."``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.errors import TopicError
from gateway.limits import MAX_PACK_RECORDS
from gateway.outbox import Cap, CapPolicy
from gateway.publisher import PublisherOptions, TLSOptions
from gateway.topics import check_gateway_id

__all__ = ["GatewaySettings"]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="URBANPULSE_GATEWAY_", extra="forbid")

    gateway_id: str = Field(default="gw-local", description="Also the MQTT client id.")
    broker_url: str = Field(
        default="mqtt://127.0.0.1:1883", description="mqtt://[user:password@]host:port or mqtts://"
    )
    username: str | None = None
    password: SecretStr | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    outbox_path: Path = Path("gateway-outbox.sqlite")
    outbox_max_packs: int | None = Field(default=200_000, ge=1)
    outbox_max_bytes: int | None = Field(default=64 * 1024 * 1024, ge=1)
    outbox_policy: CapPolicy = CapPolicy.DROP_OLDEST

    # The gateway's tuning. bench/bench_ingest.py measures end to end with packs of 100
    # (102 k readings/s, README "Benchmarks"); at packs of 10 paho's pure-Python MQTT 5 property
    # parsing took 32 % of the worker's GIL time (py-spy, README "What bounds ingestion").
    pack_max_records: int = Field(default=100, ge=1, le=MAX_PACK_RECORDS)
    pack_max_age_s: float = Field(default=5.0, gt=0)

    status_file: Path | None = Path("gateway-status.json")
    status_interval_s: float = Field(default=5.0, gt=0)
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="When a finite driver ends: how long to wait for PUBACKs."
    )

    receipts: bool = Field(
        default=True,
        description="Keep packs until the platform's receipt (issue 15); false: until PUBACK.",
    )
    receipt_timeout_s: float = Field(
        default=30.0, gt=0, description="Send a pack again when its receipt is this late."
    )
    receipt_fallback_s: float = Field(
        default=120.0,
        gt=0,
        description="No receipt ever this long after the first PUBACK: delete on PUBACK.",
    )

    driver: str = Field(default="line", description="jsonl:PATH, line, or simulator[:CITY]")
    sensors: list[str] = Field(
        default_factory=list,
        description="Sensor ids attached to this gateway; readings of others are counted and "
        "logged, not published. Empty: every sensor the driver reads.",
    )
    speed: float = Field(default=1.0, ge=0, description="Replay speed-up; 0 = as fast as possible")

    @field_validator("gateway_id")
    @classmethod
    def _gateway_id(cls, value: str) -> str:
        try:
            return check_gateway_id(value)
        except TopicError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must be an mqtt:// or mqtts:// URL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments (see load); the environment beats them.
        return env_settings, init_settings, dotenv_settings, file_secret_settings

    @classmethod
    def load(cls, config: Path | None = None, **overrides: object) -> GatewaySettings:
        """The file (if any) under the environment, then ``overrides`` (command-line options).

        ``None`` overrides are ignored; the others must be valid for their field.
        """
        values = tomllib.loads(config.read_text()) if config is not None else {}
        settings = cls(**values)
        given = {k: v for k, v in overrides.items() if v is not None}
        settings = settings.model_copy()
        for name, value in given.items():
            # Validates the value (and runs the field's validators) without reading the
            # environment again, so a command-line option beats an environment variable.
            cls.__pydantic_validator__.validate_assignment(settings, name, value)
        return settings

    def cap(self) -> Cap:
        return Cap(self.outbox_max_packs, self.outbox_max_bytes, self.outbox_policy)

    def publisher_options(self) -> PublisherOptions:
        url = urlsplit(self.broker_url)
        secure = url.scheme == "mqtts"
        files = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        tls = TLSOptions(*files) if secure or any(f is not None for f in files) else None
        username = self.username or (unquote(url.username) if url.username else None)
        password = (
            self.password.get_secret_value()
            if self.password is not None
            else (unquote(url.password) if url.password else None)
        )
        return PublisherOptions(
            gateway_id=self.gateway_id,
            host=url.hostname or "127.0.0.1",
            port=url.port or (8883 if secure else 1883),
            username=username,
            password=password,
            tls=tls,
            receipts=self.receipts,
            receipt_timeout=self.receipt_timeout_s,
            receipt_fallback=self.receipt_fallback_s,
        )
