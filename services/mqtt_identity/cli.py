"""``urbanpulse mqtt credentials``: create, rotate and revoke broker passwords, and write
Mosquitto's password file and ACL from the registry.

Each command rewrites both files in ``--auth-dir`` (``passwd`` and ``acl``, mode 0600, replaced
by rename) and, given ``--reload-pid`` or ``--reload-pid-file``, sends Mosquitto SIGHUP, which
reloads them without a restart (in deploy/: ``docker compose kill -s SIGHUP mosquitto``). A new
password is printed once, alone on stdout, to be piped into the gateway's configuration or a
secret file; only its hash is kept.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from services.cli_support import settings_for_command
from services.devstack.broker import mosquitto_password_hash
from services.devstack.files import write_private
from services.storage.urls import libpq_url

from .certs import Issued, issue, make_ca
from .files import (
    SERVICE_USERS,
    IdentityError,
    check_gateway_id,
    keep,
    parse_passwd,
    render_acl,
    render_passwd,
)

app = typer.Typer(help="The MQTT broker's identities.", no_args_is_help=True)
credentials = typer.Typer(
    help="Create, rotate and revoke broker passwords; write Mosquitto's passwd and ACL.",
    no_args_is_help=True,
)
app.add_typer(credentials, name="credentials")

AuthDir = Annotated[
    Path,
    typer.Option(
        help="where Mosquitto reads passwd and acl (deploy/ mounts deploy/mosquitto/auth)"
    ),
]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="default: URBANPULSE_DATABASE_URL")
]
ReloadPid = Annotated[int | None, typer.Option(help="send this Mosquitto SIGHUP afterwards")]
ReloadPidFile = Annotated[
    Path | None, typer.Option(help="send SIGHUP to the pid in this file afterwards")
]
DEFAULT_AUTH_DIR = Path("deploy/mosquitto/auth")


@app.callback()
def _mqtt() -> None:
    """The MQTT broker's identities: per-gateway passwords and ACL."""


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(2)


def _active_gateways(database_url: str | None) -> tuple[set[str], set[str]]:
    """(active, retired) gateway ids of the registry."""
    _, url = settings_for_command(database_url)
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            rows = conn.execute("SELECT id, status FROM gateways").fetchall()
    except psycopg.Error as exc:
        typer.echo(f"database error: {exc}", err=True)
        raise typer.Exit(1) from None
    return {r[0] for r in rows if r[1] == "active"}, {r[0] for r in rows if r[1] != "active"}


def _read(auth_dir: Path) -> dict[str, str]:
    path = auth_dir / "passwd"
    try:
        return parse_passwd(path.read_text()) if path.exists() else {}
    except IdentityError as exc:
        raise _fail(f"{path}: {exc}") from None


def _gateways_in_acl(auth_dir: Path) -> set[str]:
    path = auth_dir / "acl"
    text = path.read_text() if path.exists() else ""
    return set(re.findall(r"^user (\S+)$", text, re.MULTILINE)) - SERVICE_USERS


def _write(
    auth_dir: Path,
    hashes: dict[str, str],
    active: set[str],
    reload_pid: int | None,
    reload_pid_file: Path | None,
) -> None:
    auth_dir.mkdir(parents=True, exist_ok=True)
    kept = keep(hashes, active)
    write_private(auth_dir / "passwd", render_passwd(kept))
    write_private(auth_dir / "acl", render_acl(kept, active))
    if reload_pid_file is not None:
        try:
            reload_pid = int(reload_pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            raise _fail(f"no pid in {reload_pid_file}") from None
    if reload_pid is not None:
        try:
            os.kill(reload_pid, signal.SIGHUP)
        except OSError as exc:
            raise _fail(
                f"files written, but Mosquitto (pid {reload_pid}): {exc.strerror}"
            ) from None


def _new_password(hashes: dict[str, str], user: str) -> str:
    password = secrets.token_urlsafe(24)
    hashes[user] = mosquitto_password_hash(password)
    return password


def _registered_gateway(gateway_id: str, database_url: str | None) -> set[str]:
    try:
        check_gateway_id(gateway_id)
    except IdentityError as exc:
        raise _fail(str(exc)) from None
    active, retired = _active_gateways(database_url)
    if gateway_id in retired:
        raise _fail(f"gateway {gateway_id} is retired in the registry: it gets no credentials")
    if gateway_id not in active:
        raise _fail(
            f"gateway {gateway_id} is not in the registry: register it first "
            "(urbanpulse registry load)"
        )
    return active


def _set_password(
    gateway_id: str,
    auth_dir: Path,
    database_url: str | None,
    reload_pid: int | None,
    reload_pid_file: Path | None,
    *,
    rotate: bool,
) -> None:
    """A new password for a registered gateway: its first (``rotate=False``) or a new one."""
    active = _registered_gateway(gateway_id, database_url)
    hashes = _read(auth_dir)
    if rotate and gateway_id not in hashes:
        raise _fail(f"gateway {gateway_id} has no password: create one")
    if not rotate and gateway_id in hashes:
        raise _fail(f"gateway {gateway_id} has a password already: rotate it or revoke it")
    password = _new_password(hashes, gateway_id)
    _write(auth_dir, hashes, active, reload_pid, reload_pid_file)
    typer.echo(password)


@credentials.command("create")
def create(
    gateway_id: Annotated[str, typer.Argument(help="a registered, active gateway's id")],
    auth_dir: AuthDir = DEFAULT_AUTH_DIR,
    database_url: DatabaseUrl = None,
    reload_pid: ReloadPid = None,
    reload_pid_file: ReloadPidFile = None,
) -> None:
    """Give a registered gateway a broker password (printed once on stdout)."""
    _set_password(gateway_id, auth_dir, database_url, reload_pid, reload_pid_file, rotate=False)


@credentials.command("rotate")
def rotate(
    gateway_id: Annotated[str, typer.Argument(help="a gateway that has a password")],
    auth_dir: AuthDir = DEFAULT_AUTH_DIR,
    database_url: DatabaseUrl = None,
    reload_pid: ReloadPid = None,
    reload_pid_file: ReloadPidFile = None,
) -> None:
    """Replace a gateway's password (printed once); the old one is refused after the reload."""
    _set_password(gateway_id, auth_dir, database_url, reload_pid, reload_pid_file, rotate=True)


@credentials.command("revoke")
def revoke(
    gateway_id: Annotated[str, typer.Argument(help="the gateway whose password goes")],
    auth_dir: AuthDir = DEFAULT_AUTH_DIR,
    database_url: DatabaseUrl = None,
    reload_pid: ReloadPid = None,
    reload_pid_file: ReloadPidFile = None,
) -> None:
    """Remove a gateway's password and topics; it is refused after the reload."""
    try:
        check_gateway_id(gateway_id)
    except IdentityError as exc:
        raise _fail(str(exc)) from None
    active, _ = _active_gateways(database_url)
    hashes = _read(auth_dir)
    if hashes.pop(gateway_id, None) is None:
        raise _fail(f"gateway {gateway_id} has no password")
    _write(auth_dir, hashes, active, reload_pid, reload_pid_file)
    typer.echo(f"revoked {gateway_id}", err=True)


@credentials.command("service")
def service(
    name: Annotated[str, typer.Argument(help=f"one of {', '.join(sorted(SERVICE_USERS))}")],
    auth_dir: AuthDir = DEFAULT_AUTH_DIR,
    reload_pid: ReloadPid = None,
    reload_pid_file: ReloadPidFile = None,
) -> None:
    """Create or rotate a service user's password (printed once); needs no database.

    The gateways keep the access the last registry read gave them."""
    if name not in SERVICE_USERS:
        raise _fail(f"{name!r} is not a service user ({', '.join(sorted(SERVICE_USERS))})")
    hashes = _read(auth_dir)
    password = _new_password(hashes, name)
    _write(auth_dir, hashes, _gateways_in_acl(auth_dir), reload_pid, reload_pid_file)
    typer.echo(password)


@credentials.command("sync")
def sync(
    auth_dir: AuthDir = DEFAULT_AUTH_DIR,
    database_url: DatabaseUrl = None,
    reload_pid: ReloadPid = None,
    reload_pid_file: ReloadPidFile = None,
) -> None:
    """Rewrite passwd and ACL from the registry: a gateway retired since loses its access."""
    active, _ = _active_gateways(database_url)
    hashes = _read(auth_dir)
    dropped = sorted(set(hashes) - SERVICE_USERS - active)
    _write(auth_dir, hashes, active, reload_pid, reload_pid_file)
    for gateway_id in dropped:
        typer.echo(f"dropped {gateway_id} (retired or not registered)", err=True)


certs = typer.Typer(
    help="A city CA, the broker's certificate and gateway client certificates (test, pilot).",
    no_args_is_help=True,
)
app.add_typer(certs, name="certs")
TlsDir = Annotated[
    Path, typer.Option(help="where the CA and the broker's files are (compose mounts it)")
]
DEFAULT_TLS_DIR = Path("deploy/mosquitto/tls")


def _save(directory: Path, stem: str, issued: Issued) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / f"{stem}.key", issued.key_pem.decode())
    (directory / f"{stem}.crt").write_bytes(issued.cert_pem)


def _load_ca(tls_dir: Path) -> Issued:
    try:
        return Issued((tls_dir / "ca.key").read_bytes(), (tls_dir / "ca.crt").read_bytes())
    except OSError as exc:
        raise _fail(
            f"no CA in {tls_dir} ({exc.strerror}): run `urbanpulse mqtt certs ca`"
        ) from None


@certs.command("ca")
def make_ca_command(
    tls_dir: TlsDir = DEFAULT_TLS_DIR,
    name: Annotated[str, typer.Option(help="the CA's common name")] = "UrbanPulse city CA",
    force: Annotated[bool, typer.Option(help="replace an existing CA")] = False,
) -> None:
    """Make the city CA (ca.key, mode 0600, and ca.crt, which gateways trust)."""
    if (tls_dir / "ca.key").exists() and not force:
        raise _fail(f"{tls_dir}/ca.key exists: every certificate it signed depends on it (--force)")
    _save(tls_dir, "ca", make_ca(name))
    typer.echo(f"wrote {tls_dir}/ca.crt and ca.key", err=True)


@certs.command("broker")
def broker_cert(
    host: Annotated[list[str], typer.Option(help="a DNS name or IP gateways connect to")],
    tls_dir: TlsDir = DEFAULT_TLS_DIR,
) -> None:
    """Issue the broker's certificate (broker.crt, broker.key) for its host names."""
    _save(tls_dir, "broker", issue(_load_ca(tls_dir), host[0], server_names=host))
    typer.echo(f"wrote {tls_dir}/broker.crt and broker.key", err=True)


@certs.command("gateway")
def gateway_cert(
    gateway_id: Annotated[str, typer.Argument(help="the gateway's id (the certificate's CN)")],
    out: Annotated[Path, typer.Option(help="where <id>.crt and <id>.key go")],
    tls_dir: TlsDir = DEFAULT_TLS_DIR,
) -> None:
    """Issue a gateway's client certificate; give it <id>.crt, <id>.key and ca.crt."""
    try:
        check_gateway_id(gateway_id)
    except IdentityError as exc:
        raise _fail(str(exc)) from None
    _save(out, gateway_id, issue(_load_ca(tls_dir), gateway_id))
    typer.echo(f"wrote {out}/{gateway_id}.crt and {gateway_id}.key", err=True)
