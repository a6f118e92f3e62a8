"""The distribution: its wheel, its generic package names, its one-way imports, its extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
import zipfile
from importlib.metadata import distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "simulators", "services", "dashboards")
SERVER_LIBRARIES = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "fastapi",
    "uvicorn",
    "starlette",
    "prometheus_client",
)


def test_no_other_installed_distribution_ships_our_package_names() -> None:
    # The names are generic; a stray `services` package from another distribution would shadow
    # ours (or ours it) depending on sys.path order.
    clashes = {}
    for dist in distributions():
        if dist.metadata["Name"].lower() == "urbanpulse":
            continue
        tops = {Path(str(f)).parts[0] for f in dist.files or ()}
        if shared := tops.intersection(PACKAGES):
            clashes[dist.metadata["Name"]] = sorted(shared)
    assert clashes == {}


def test_the_wheel_holds_the_four_packages_and_the_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("urbanpulse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("urbanpulse-")}
    assert tops == set(PACKAGES)
    assert "services/storage/migrations/versions/0001_initial.py" in names
    assert "services/storage/migrations/script.py.mako" in names
    assert "gateway/kinds.py" in names
    assert "services/devstack/mosquitto.acl" in names  # what `urbanpulse up` gives Mosquitto


def test_the_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_arrow_breaks_the_contracts(tmp_path: Path) -> None:
    """The contracts of pyproject.toml, run on a tree where the gateway imports the server."""
    config = (ROOT / "pyproject.toml").read_text()
    # Every module a contract names must exist (import-linter refuses a missing one): an empty
    # package for each, then the one wrong arrow.
    named = set(PACKAGES)
    for contract in tomllib.loads(config)["tool"]["importlinter"]["contracts"]:
        named.update(contract.get("source_modules", []))
        named.update(contract.get("forbidden_modules", []))
        for container in contract.get("containers", []):
            for layer in contract.get("layers", []):
                named.update(f"{container}.{m.strip()}" for m in layer.split("|"))
    for module in sorted(n for n in named if n.split(".")[0] in PACKAGES):
        package = tmp_path.joinpath(*module.split("."))
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
    (tmp_path / "gateway" / "outbox" / "__init__.py").write_text("import services.storage\n")
    (tmp_path / "pyproject.toml").write_text(config[config.index("[tool.importlinter]") :])
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "gateway.outbox -> services.storage" in result.stdout


# Run `urbanpulse` as a field gateway would have it: every server library missing.
_GATEWAY_ONLY = textwrap.dedent(f"""
    import sys
    for name in {SERVER_LIBRARIES!r}:
        sys.modules[name] = None  # importing it now raises ImportError
    from services.cli import main
    sys.argv = ["urbanpulse", *sys.argv[1:]]
    main()
""")


def _gateway_only(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _GATEWAY_ONLY, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def test_senml_decode_runs_without_the_server_libraries() -> None:
    result = _gateway_only(
        "senml",
        "decode",
        "--received-at",
        "1700000000",
        stdin='[{"n":"wat-dma-0001/flow","u":"m3/s","v":0.5,"t":-10}]',
    )
    assert result.returncode == 0, result.stderr
    assert '"n":"wat-dma-0001/flow"' in result.stdout.replace(" ", "")
    assert "1699999990" in result.stdout


def test_a_server_command_without_the_server_extra_says_what_to_install() -> None:
    result = _gateway_only("db", "status")
    assert result.returncode == 2
    assert "pip install 'urbanpulse[server]'" in result.stderr


def test_the_gateway_modules_import_no_server_library() -> None:
    code = (
        "import sys, gateway.kinds, gateway.names, gateway.senml, gateway.topics; "
        f"print(sorted(m for m in {SERVER_LIBRARIES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command", ["db", "gateway", "ingest", "quarantine", "registry", "senml", "simulate", "up"]
)
def test_every_subcommand_has_help(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", command, "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
