"""Settings of the server processes, from ``URBANPULSE_*`` environment variables and an optional
env file (``URBANPULSE_ENV_FILE``, default ``urbanpulse.env`` when present).

Built in each command's ``main`` and passed down; nothing reads the environment at import time.
One class holds every variable (so each keeps its name and its error message); each process reads
its tuning through its own view: :class:`IngestSettings`, :class:`MonitorSettings`,
:class:`ApiSettings` (the gateway, a separate program, has ``gateway.config.GatewaySettings``).
A bad value raises :class:`SettingsError`; ending a command is ``services.cli_support``'s job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "URBANPULSE_"


class StorageMode(StrEnum):
    AUTO = "auto"
    TIMESCALEDB = "timescaledb"
    PARTITIONED = "partitioned"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"  # one JSON object a line, for log shippers


class UnknownSensors(StrEnum):
    QUARANTINE = "quarantine"
    REGISTER = "register"


class SettingsError(Exception):
    """Settings could not be built; the message names each bad variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; unset, `urbanpulse up` starts an embedded server.",
    )
    mqtt_url: str | None = Field(
        default=None, description="mqtt://host:port; unset, `urbanpulse up` starts a broker."
    )
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT
    # What ingestion does with readings of a sensor not in the registry: quarantine them, or
    # also add the sensor as "pending" so an engineer finds it, sets its kind and replays.
    unknown_sensors: UnknownSensors = UnknownSensors.QUARANTINE
    storage_mode: StorageMode = StorageMode.AUTO
    retention: timedelta = Field(default=timedelta(days=400), description="raw readings kept")
    partition_interval: timedelta = Field(default=timedelta(days=1))
    partitions_ahead: int = Field(default=7, ge=1, le=366)
    live_readings: bool = Field(
        default=True,
        description="ingestion logs each batch's new readings for the live stream (SSE)",
    )
    events_retention: timedelta = Field(
        default=timedelta(hours=1), description="how far back a live-stream client may resume"
    )
    data_dir: Path = Field(default=Path(".urbanpulse"), description="state of `urbanpulse up`")

    # --- Ingestion hardening (issue 11) ---------------------------------------------------
    # How far ahead of the worker's clock a reading's time may be. Seconds, not minutes: with
    # minutes a spoofer could store values ahead of the real ones (which then collide with
    # them and are quarantined as conflicts, see services/storage/writer.py).
    max_future_skew: timedelta = Field(
        default=timedelta(seconds=10), description="a reading's time may be this far ahead"
    )
    # What one message may cost the quarantine: its rejected records each get an entry up to
    # this many; the rest become one entry (reason too_many_rejects) counting them.
    quarantine_max_entries_per_message: int = Field(default=500, ge=1, le=100_000)
    # Pruned by the worker's maintenance loop: entries older than this go, and past the size
    # (payload bytes) the oldest messages go, those whose entries were all replayed first.
    quarantine_retention: timedelta = Field(
        default=timedelta(days=30), description="quarantined messages kept this long"
    )
    quarantine_max_bytes: int = Field(
        default=1024**3, ge=0, description="quarantined payload bytes kept (0: no limit)"
    )
    # Receipts and the pack ledger (issue 15). Ledger rows below each gateway's oldest pack are
    # pruned as soon as it moves on; this bounds the rest (gateways gone, outboxes replaced).
    # Forgetting a row is safe: the readings key still absorbs a pack that comes again.
    pack_ledger_retention: timedelta = Field(
        default=timedelta(days=1), description="pack ledger rows kept at most this long"
    )
    receipts: bool = Field(
        default=True, description="ingestion sends gateways receipts on ssc/v1/<id>/down"
    )
    direct_copy: bool = Field(
        default=True,
        description="ingestion COPYs batches straight into readings (staging + ON CONFLICT "
        "only when the key refuses a batch)",
    )

    # --- API request bounds (issue 10): what one request may cost the database. A statement
    # running past its class's timeout is cancelled by PostgreSQL and answered 504; a range
    # longer than its limit is refused 422 before any query. Timeouts are per statement.
    api_statement_timeout_readings: timedelta = Field(
        default=timedelta(seconds=10),
        gt=timedelta(0),
        description="statement timeout of /v1/sensors/{id}/readings",
    )
    api_statement_timeout_kpis: timedelta = Field(
        default=timedelta(seconds=30),
        gt=timedelta(0),
        description="statement timeout of a KPI computed for /v1/kpis (values, series)",
    )
    api_statement_timeout_other: timedelta = Field(
        default=timedelta(seconds=60),
        gt=timedelta(0),
        description="statement timeout of every other API request (registry loads included)",
    )
    api_max_span_raw: timedelta = Field(
        default=timedelta(days=31), gt=timedelta(0), description="longest range of raw readings"
    )
    api_max_span_1m: timedelta = Field(
        default=timedelta(days=62), gt=timedelta(0), description="longest range of 1m readings"
    )
    api_max_span_1h: timedelta = Field(
        default=timedelta(days=3660), gt=timedelta(0), description="longest range of 1h readings"
    )
    api_max_span_1d: timedelta = Field(
        default=timedelta(days=36600), gt=timedelta(0), description="longest range of 1d readings"
    )
    api_kpi_max_span: timedelta = Field(
        default=timedelta(days=3660),
        gt=timedelta(0),
        description="longest range of a KPI value or series",
    )
    api_kpi_max_buckets: int = Field(
        default=1000, ge=1, le=10_000, description="most buckets of a KPI series"
    )

    @field_validator("database_read_url", mode="before")
    @classmethod
    def _blank_read_url(cls, value: object) -> object:
        # deploy/compose.yaml passes an empty URBANPULSE_DATABASE_READ_URL when no standby is
        # configured (compose cannot leave a variable out conditionally): no replica.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url", "database_read_url", "import_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("postgresql://", "postgres://", "postgresql+psycopg://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("webhook_allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        """Comma-separated networks, each read by ``ipaddress`` so a mistake is named plainly."""
        if not isinstance(value, str):
            return value
        networks = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                networks.append(ip_network(part))
            except ValueError as exc:
                raise ValueError(f"{part!r} is not a network: {exc}") from None
        return networks

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must be an mqtt:// or mqtts:// URL")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    # Grafana, for `urbanpulse dashboards push` (dashboards/push.py): the server's URL and a
    # service-account token with the Editor role; the dashboards land in their folder.
    grafana_url: str | None = Field(default=None, description="http(s):// URL of Grafana")
    grafana_token: SecretStr | None = Field(default=None, description="service-account token")
    grafana_folder: str = Field(default="UrbanPulse", description="folder the dashboards go to")

    # Data in and out (services/dataio, issue 16). An open-data export publishes sensor-level
    # readings as stored ("sensor"), coarsened per district and quantity ("district": sensors,
    # count, mean, min, max; no sensor id or position), or not at all ("omit": KPIs only). The
    # bundle and the API's readings export follow it; the CLI may ask for any level.
    open_data_sensor_level: str = Field(default="district", pattern="^(sensor|district|omit)$")
    open_data_title: str = Field(default="UrbanPulse city sensor data and KPIs")
    open_data_publisher: str = Field(default="the city", description="dct:publisher's name")
    open_data_licence: str = Field(
        default="http://creativecommons.org/licenses/by/4.0/", description="dct:license URI"
    )
    # The API's import endpoint takes files up to this size; bigger ones go through the CLI.
    import_max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    # The public city page (services/api/routes/pages.py): off by default, because turning it on
    # publishes the city's KPIs to anyone who can reach the API. Even then it shows KPIs with
    # their targets, coverage and trend only; never readings or a sensor's id or position. The
    # one thing about sensors it may add is how many each district has per domain.
    public_page: bool = Field(
        default=False, description="serve /public and /public/kpis without a key"
    )
    public_sensor_counts: bool = Field(
        default=False, description="the public page also shows each district's sensor counts"
    )

    # --- API hardening (issue 11): what one caller may cost the API. ---
    # Request bodies: refused with 413 while they stream in, past these sizes; a /v1 body's key
    # is checked before any of it is read. The bulk limit is at most 10 MiB: it is parsed whole.
    api_max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest body of a route"
    )
    api_max_body_bytes_bulk: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        le=10 * 1024 * 1024,
        description="largest body of POST /v1/registry/bulk",
    )
    # Live streams (SSE): how many may be open at once per key (429 past it) and per process
    # (503); the readings one poll of the log reads at most (what a stream holds); how long a
    # send may wait on a reader that takes nothing before the stream is closed; how often an
    # open stream asks the database whether its key is still valid (revoked: the stream ends).
    api_stream_max_per_key: int = Field(
        default=8, ge=1, le=10_000, description="live streams open at once per key"
    )
    api_stream_max: int = Field(
        default=100, ge=1, le=100_000, description="live streams open at once per API process"
    )
    api_stream_page_readings: int = Field(
        default=5_000, ge=1, le=1_000_000, description="readings one poll of the log reads"
    )
    api_stream_stall_timeout: timedelta = Field(
        default=timedelta(seconds=30),
        gt=timedelta(0),
        description="a stream whose reader takes nothing this long is closed",
    )
    api_stream_key_recheck: timedelta = Field(
        default=timedelta(seconds=10),
        gt=timedelta(0),
        description="how often an open stream re-checks its key",
    )
    # Failed key checks: past this many within the window, from one client address or for one
    # key id, further unverified attempts are answered 429 (Retry-After) with no query and no
    # scrypt, until the window has passed.
    api_auth_failures_max: int = Field(
        default=10, ge=1, le=1_000_000, description="failed key checks allowed in the window"
    )
    api_auth_failures_window: timedelta = Field(
        default=timedelta(minutes=1),
        gt=timedelta(0),
        description="the sliding window failed key checks are counted in",
    )
    # Read replica (issue 14). Unset, every query goes to the primary. Set, the API's read-only
    # routes read from this streaming standby while its replay lag is within the maximum; past
    # it, or while the standby does not answer, they read from the primary (answers stay
    # fresh) and /readyz reports "degraded". Writes, key checks and the live stream always use
    # the primary.
    database_read_url: str | None = Field(
        default=None, description="PostgreSQL URL of a streaming standby for the API's reads"
    )
    database_read_max_lag: timedelta = Field(
        default=timedelta(seconds=30),
        gt=timedelta(0),
        description="replay lag past which the API reads from the primary instead",
    )

    # Notifications (services.notify, issue 16): the notifier's pass interval, its retries and
    # the SMTP server e-mail subscriptions go through. Backoff doubles from the base up to the
    # cap: 6 attempts from 30 s span about 15 minutes before a row becomes a dead letter.
    notify_interval: timedelta = Field(
        default=timedelta(seconds=5), gt=timedelta(0), description="time between notifier passes"
    )
    notify_max_attempts: int = Field(
        default=6, ge=1, le=100, description="deliveries tried before a dead letter"
    )
    notify_backoff_base: timedelta = Field(
        default=timedelta(seconds=30), gt=timedelta(0), description="wait after the first failure"
    )
    notify_backoff_cap: timedelta = Field(
        default=timedelta(hours=1), gt=timedelta(0), description="longest wait between attempts"
    )
    notify_timeout: timedelta = Field(
        default=timedelta(seconds=10), gt=timedelta(0), description="one delivery's time limit"
    )
    smtp_host: str | None = Field(default=None, description="SMTP server; none: no e-mail")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = Field(default="urbanpulse@localhost", description="the e-mails' sender")
    smtp_starttls: bool = Field(default=False, description="upgrade to TLS before sending")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # Webhooks reach global addresses only, so a subscription cannot make the notifier probe
    # the city's own network (services/notify/egress.py); these networks are allowed besides,
    # e.g. "10.20.0.0/16,192.0.2.7/32" for an internal ticketing system.
    webhook_allow_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list, description="networks webhooks may reach besides global addresses"
    )

    # Retention and erasure (services/storage/retention.py, erasure.py; issue 16). How long
    # data is kept is set per domain, kind or quantity with `urbanpulse retention` (the table
    # retention_policies; URBANPULSE_RETENTION only seeds the default at the first migration).
    # One erasure covers at most this span of a sensor's readings: its rows go in committed
    # batches, and a recompute refreshes the rollups over the whole span at once.
    erasure_max_span: timedelta = Field(
        default=timedelta(days=400), gt=timedelta(0), description="longest range one erasure takes"
    )

    # POST /v1/imports (issue 16) writes readings, which the API's own role (urbanpulse_api in
    # deploy/) may not: a login of the ingestion role, used by that endpoint alone. Unset: the
    # endpoint uses URBANPULSE_DATABASE_URL, and answers 503 naming this setting when that
    # role may not write what an import writes.
    import_database_url: str | None = Field(
        default=None,
        description="database URL of POST /v1/imports (a login of the ingestion role)",
    )

    # --- The ingestion worker's and the monitor's tuning (issue 12), read through their views
    # (IngestSettings, MonitorSettings below); a command-line option overrides its setting.
    # bench/bench_ingest.py measured batches of 20,000 records about 20 % faster end to end than
    # 5,000 (the per-transaction round trips and fsync spread over more rows); the cap is reached
    # only under load, an idle worker commits each pack as soon as the committer is free.
    ingest_batch_records: int = Field(
        default=20_000, ge=1, description="at most this many records a batch (one transaction)"
    )
    # No measurement chose it: it bounds what batching may add to a reading's latency while
    # messages keep coming. bench_ingest's publish-to-row latency at 20,000 readings/s ran with
    # it (p50 54 ms, p99 91 ms; README, Benchmarks).
    ingest_flush_ms: float = Field(
        default=50.0, gt=0, description="a batch goes at most this long after its first message"
    )
    # 9108 and 9109: the ports deploy/compose.yaml's health checks and Prometheus scrape.
    ingest_metrics_port: int = Field(
        default=9108, ge=0, le=65535, description="the worker's Prometheus metrics (0: none)"
    )
    ingest_metrics_host: str = Field(
        default="127.0.0.1", description="address the worker's metrics listen on"
    )
    # Chosen, not measured: the worker refreshes the rollups every minute, so a monitor round
    # more often than that finds the same values.
    monitor_every: timedelta = Field(
        default=timedelta(seconds=60), ge=timedelta(seconds=1), description="between rounds"
    )
    monitor_metrics_port: int = Field(
        default=9109, ge=0, le=65535, description="the monitor's Prometheus metrics (0: none)"
    )
    monitor_metrics_host: str = Field(
        default="127.0.0.1", description="address the monitor's metrics listen on"
    )

    # --- The API process's tuning (issue 12): its connection pools and its cache of computed
    # KPI answers, read by create_app and passed down (they were constants of services.api).
    # Endpoints are sync and run in AnyIO's threadpool (40 threads), but most requests hold a
    # connection for a few milliseconds, so ~10 connections serve a 2-core API; PostgreSQL's
    # default max_connections (100) then leaves room for ingestion workers and several
    # replicas. Two stay open so a quiet API answers its first request without a connect.
    api_pool_min: int = Field(default=2, ge=0, description="connections kept open per pool")
    api_pool_max: int = Field(default=12, ge=1, description="most connections per pool")
    # Requests that hold a connection for their whole run wait for one of these slots without
    # holding a thread (services.api.deps); the other api_pool_max - api_request_slots
    # connections stay free for key checks, readiness probes and the live stream's polls, so
    # those never wait on requests that cannot finish. Also the event loop's pool's size. Found
    # with wrk and py-spy (README, "What bounds the API"): 50 concurrent requests blocked
    # AnyIO's 40 threads waiting for 10 pooled connections when they waited in a thread.
    api_request_slots: int = Field(
        default=10, ge=1, description="requests holding a connection at once"
    )
    # How long a request waits for a pooled connection before it is answered 503 (the database
    # is down or saturated), rather than hanging for psycopg_pool's default 30 s.
    api_pool_timeout: timedelta = Field(
        default=timedelta(seconds=5), gt=timedelta(0), description="wait for a connection"
    )
    # A KPI value computed over the rollups is served from the cache this long (the responses'
    # Cache-Control max-age states it); past this many answers the least recently used goes.
    # Chosen, not measured: the rollups under a KPI move once a minute (the worker's refresh).
    api_kpi_cache_ttl: timedelta = Field(
        default=timedelta(seconds=60), ge=timedelta(0), description="a cached KPI answer's life"
    )
    api_kpi_cache_entries: int = Field(default=512, ge=1, description="KPI answers cached")

    @field_validator("api_request_slots")
    @classmethod
    def _slots_leave_connections_free(cls, value: int, info: ValidationInfo) -> int:
        pool_max = info.data.get("api_pool_max")
        if pool_max is not None and value >= pool_max:
            raise ValueError(
                f"must be below URBANPULSE_API_POOL_MAX ({pool_max}): the connections between "
                "serve key checks, readiness probes and the live stream"
            )
        return value


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning a validation error into one line per bad variable."""
    env_file = os.environ.get(f"{ENV_PREFIX}ENV_FILE", "urbanpulse.env")
    try:
        return Settings(_env_file=env_file if Path(env_file).is_file() else None, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            lines.append(f"{name}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


# --- One view per process: the values it is tuned by, typed and in one object, so a process
# reads its tuning from one place. The values (and the measurements that chose them) are the
# Settings fields above; `defaults()` gives them without reading the environment.


class _View:
    """A process's view of the settings: ``of`` picks its values from a Settings."""

    __slots__ = ()

    @classmethod
    def of(cls, settings: Settings) -> Self:
        raise NotImplementedError

    @classmethod
    def defaults(cls) -> Self:
        """The view of the default settings, without reading the environment or env file."""
        return cls.of(Settings.model_construct())


@dataclass(frozen=True, slots=True)
class IngestSettings(_View):
    """The ingestion worker's tuning (``urbanpulse ingest``, and the worker of ``urbanpulse
    up``); services.ingest.cli.ingest.worker_config turns it into a WorkerConfig."""

    batch_records: int
    flush_ms: float
    metrics_port: int
    metrics_host: str
    register_unknown: bool
    live_events: bool
    events_retention_s: float
    max_entries_per_message: int
    quarantine_retention_s: float
    quarantine_max_bytes: int
    ledger_retention_s: float
    receipts: bool
    direct_copy: bool

    @classmethod
    def of(cls, settings: Settings) -> Self:
        return cls(
            batch_records=settings.ingest_batch_records,
            flush_ms=settings.ingest_flush_ms,
            metrics_port=settings.ingest_metrics_port,
            metrics_host=settings.ingest_metrics_host,
            register_unknown=settings.unknown_sensors == UnknownSensors.REGISTER,
            live_events=settings.live_readings,
            events_retention_s=settings.events_retention.total_seconds(),
            max_entries_per_message=settings.quarantine_max_entries_per_message,
            quarantine_retention_s=settings.quarantine_retention.total_seconds(),
            quarantine_max_bytes=settings.quarantine_max_bytes,
            ledger_retention_s=settings.pack_ledger_retention.total_seconds(),
            receipts=settings.receipts,
            direct_copy=settings.direct_copy,
        )


@dataclass(frozen=True, slots=True)
class MonitorSettings(_View):
    """The monitor's tuning (``urbanpulse monitor``)."""

    every_s: float
    metrics_port: int
    metrics_host: str

    @classmethod
    def of(cls, settings: Settings) -> Self:
        return cls(
            every_s=settings.monitor_every.total_seconds(),
            metrics_port=settings.monitor_metrics_port,
            metrics_host=settings.monitor_metrics_host,
        )


@dataclass(frozen=True, slots=True)
class ApiSettings(_View):
    """The API process's tuning (``urbanpulse api``): where it listens, its connection pools
    and its cache of computed KPI answers, read by create_app."""

    host: str
    port: int
    pool_min: int
    pool_max: int
    request_slots: int
    pool_timeout_s: float
    kpi_cache_ttl_s: float
    kpi_cache_entries: int

    @classmethod
    def of(cls, settings: Settings) -> Self:
        return cls(
            host=settings.api_host,
            port=settings.api_port,
            pool_min=settings.api_pool_min,
            pool_max=settings.api_pool_max,
            request_slots=settings.api_request_slots,
            pool_timeout_s=settings.api_pool_timeout.total_seconds(),
            kpi_cache_ttl_s=settings.api_kpi_cache_ttl.total_seconds(),
            kpi_cache_entries=settings.api_kpi_cache_entries,
        )
