"""deploy/compose.yaml, the Dockerfile and .env.example, checked without a Docker engine.

No Docker engine runs on the machines these tests run on, so nothing here starts a container:
the compose file is validated against the Compose specification's JSON schema (vendored in
deploy/compose-spec/), its paths, commands and variables are checked against this repository
and the installed package, and the broker and Grafana files it mounts are shown to be the ones
the other tests exercise (the broker config is run by tests/deploy/test_mqtt_identity.py on a
real Mosquitto; the provisioning is checked by tests/dashboards/test_provisioning.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from dashboards.build import GRAFANA_VERSION
from services.storage.roles import OWNER
from tests.dashboards.grafana_provisioning import interpolate_value

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
URBANPULSE = Path(sys.executable).parent / "urbanpulse"
# ${NAME}, ${NAME:-default}, ${NAME:?error}; "$${...}" is an escaped dollar, not a read.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def _compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def _services() -> dict[str, dict[str, Any]]:
    return dict(_compose()["services"])


def _ours(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("urbanpulse:")


def _interpolate(text: str, dotenv: Mapping[str, str] | None = None) -> str:
    """Compose's interpolation (of one level, all this file uses) with the variables of a
    ``.env``; by default an empty one, which leaves each variable's default."""
    values = dotenv or {}

    def sub(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2) or "", match.group(3) or ""
        value = values.get(name)
        given = value is not None and (value != "" or ":" not in operator)
        if operator.endswith("-"):
            return value if given and value is not None else argument
        if operator.endswith("?"):
            if not given or value is None:
                raise ValueError(f"{name}: {argument}")
            return value
        if operator.endswith("+"):
            return argument if given else ""
        return value or ""

    return VARIABLE.sub(sub, text)


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads((DEPLOY / "compose-spec" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


def test_the_schema_rejects_a_broken_compose_file() -> None:
    # The validation above can fail: an unknown key in a service is an error.
    schema = json.loads((DEPLOY / "compose-spec" / "compose-spec.json").read_text())
    broken = _compose()
    broken["services"]["api-1"]["comand"] = ["api"]
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def _bind_sources() -> list[tuple[str, Path]]:
    found = []
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                found.append((name, (DEPLOY / source).resolve()))
    return found


def test_every_bind_mounted_file_or_directory_exists() -> None:
    sources = _bind_sources()
    assert sources  # the config files are mounted, not baked in
    assert [(name, str(path)) for name, path in sources if not path.exists()] == []


def test_secrets_are_files_in_the_ignored_secrets_directory_and_documented() -> None:
    compose = _compose()
    readme = (DEPLOY / "secrets" / "README.md").read_text()
    files = [Path(spec["file"]) for spec in compose["secrets"].values()]
    files += [
        Path(env_file)
        for service in compose["services"].values()
        for env_file in service.get("env_file", [])
    ]
    for path in files:
        assert (DEPLOY / path).resolve().parent == DEPLOY / "secrets", path
        assert f"`{path.name}`" in readme, f"{path.name} is not in deploy/secrets/README.md"
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *(str(DEPLOY / p) for p in files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert len(ignored.stdout.splitlines()) == len(files), ignored


def test_nothing_secret_is_written_in_the_compose_file() -> None:
    # Passwords reach containers as files: no PASSWORD/SECRET/TOKEN variable carries a value.
    for name, service in _services().items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if re.search(r"PASSWORD|PASS$|SECRET|TOKEN", key) and not key.endswith("_FILE"):
                assert key.endswith("__FILE") or value is None, (name, key)
    for key in _env_example():
        assert not re.search(r"PASSWORD|SECRET|TOKEN", key), key


def test_every_variable_the_compose_file_reads_is_in_env_example() -> None:
    read = set(VARIABLE.findall(COMPOSE.read_text()))
    names = {match[0] for match in read}
    assert names  # the parser finds them
    assert sorted(names - set(_env_example())) == []


def test_every_urbanpulse_command_is_a_real_command_of_the_installed_package() -> None:
    commands = {
        name: [_interpolate(str(part)) for part in service["command"]]
        for name, service in _services().items()
        if _ours(service) and "command" in service
    }
    assert {
        "migrate",
        "retention",
        "ingest-1",
        "ingest-2",
        "api-1",
        "api-2",
        "monitor",
        "simulator",
    } <= set(commands)
    for name, argv in commands.items():
        # --help after the options: an unknown option or a bad value is still an error.
        result = subprocess.run(
            [str(URBANPULSE), *argv, "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (name, argv, result.stderr)
        assert "Usage: urbanpulse" in result.stdout


def test_the_command_check_catches_a_command_that_does_not_exist() -> None:
    result = subprocess.run(
        [str(URBANPULSE), "ingest", "--no-such-option", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0


def test_images_are_pinned_to_the_versions_the_platform_needs() -> None:
    services = _services()
    for name, service in services.items():
        image = _interpolate(str(service["image"]))
        assert ":" in image, (name, image)
        assert image.rpartition(":")[2] not in {"", "latest"}, (name, image)
    mosquitto = services["mosquitto"]["image"].rpartition(":")[2]
    # 2.0.19 is the first release that persists shared subscriptions (two ingestion workers).
    assert tuple(int(p) for p in mosquitto.split(".")) >= (2, 0, 19)
    grafana = services["grafana"]["image"].rpartition(":")[2]
    assert grafana.startswith(f"{GRAFANA_VERSION}."), (grafana, GRAFANA_VERSION)
    timescale = re.fullmatch(
        r"(\d+)\.(\d+)\.\d+-pg(\d+)", services["timescaledb"]["image"].split(":")[1]
    )
    assert timescale is not None
    major, minor, postgres = (int(g) for g in timescale.groups())
    # TimescaleDB 2.17 and later support PostgreSQL 14 to 17.
    assert (major, minor) >= (2, 17)
    assert 14 <= postgres <= 17


def test_the_stack_has_the_replicas_and_the_profile_the_design_asks_for() -> None:
    services = _services()
    ingest = [s for s in services.values() if _ours(s) and s.get("command", [""])[0] == "ingest"]
    groups = {s["command"][s["command"].index("--group") + 1] for s in ingest}
    client_ids = {s["command"][s["command"].index("--client-id") + 1] for s in ingest}
    assert len(ingest) == 2
    assert len(groups) == 1
    assert len(client_ids) == 2
    api = [s for s in services.values() if _ours(s) and s.get("command", [""])[0] == "api"]
    assert len(api) == 2
    assert services["simulator"]["profiles"] == ["simulator"]
    caddyfile = (DEPLOY / "caddy" / "Caddyfile").read_text()
    assert "reverse_proxy api-1:8000 api-2:8000" in caddyfile
    scraped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target.split(":")[0]
        for job in scraped["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    # Every service serving metrics is scraped.
    assert {"api-1", "api-2", "ingest-1", "ingest-2", "monitor", "grafana", "caddy"} <= targets
    assert {"mosquitto-exporter", "postgres-exporter"} <= targets


def test_prometheus_scrapes_the_workers_and_the_monitor_where_they_listen() -> None:
    """No sidecar in between: each ingest worker and the monitor serve their metrics on every
    interface of their container, on the port Prometheus scrapes."""
    services = _services()
    scraped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        tuple(target.split(":"))
        for job in scraped["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    for name in ("ingest-1", "ingest-2", "monitor"):
        argv = [str(part) for part in services[name]["command"]]
        assert argv[argv.index("--metrics-host") + 1] == "0.0.0.0", name
        port = argv[argv.index("--metrics-port") + 1]
        assert (name, port) in targets, (name, port)
    # The socat sidecars that once forwarded 127.0.0.1-only metrics are gone.
    assert not [n for n, s in services.items() if "socat" in str(s.get("image", ""))]


def test_the_mounted_broker_and_grafana_files_are_the_ones_the_tests_check() -> None:
    services = _services()
    mounts = {
        (name, volume.split(":")[1]): (DEPLOY / volume.split(":")[0]).resolve()
        for name, service in services.items()
        for volume in service.get("volumes", [])
        if volume.startswith(".")
    }
    # Run on a real Mosquitto by tests/deploy/test_mqtt_identity.py, whose guarantee lines
    # tests/services/devstack/test_broker.py checks.
    assert mounts["mosquitto", "/mosquitto/config/mosquitto.conf"] == (
        DEPLOY / "mosquitto" / "mosquitto.conf"
    )
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    auth_target = "/mosquitto/auth"
    assert mounts["mosquitto", auth_target] == DEPLOY / "mosquitto" / "auth"
    assert f"password_file {auth_target}/passwd" in conf
    assert f"acl_file {auth_target}/acl" in conf
    assert mounts["mosquitto", "/mosquitto/tls"] == DEPLOY / "mosquitto" / "tls"
    for name in ("ca.crt", "broker.crt", "broker.key"):
        assert f" /mosquitto/tls/{name}\n" in conf
    # Checked by tests/dashboards/test_provisioning.py.
    assert mounts["grafana", "/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "urbanpulse.yaml").read_text()
    )["providers"][0]
    assert mounts["grafana", provider["options"]["path"]] == ROOT / "dashboards" / "generated"
    datasource = (
        DEPLOY / "grafana" / "provisioning" / "datasources" / "urbanpulse.yaml"
    ).read_text()
    grafana_env = services["grafana"]["environment"]
    for name in set(re.findall(r"\$\{(URBANPULSE_PG_[A-Z]+)\}", datasource)) - {
        "URBANPULSE_PG_PASSWORD"
    }:
        assert name in grafana_env, name
    # The password is read from its secret file by the entrypoint, not written here.
    assert "URBANPULSE_PG_PASSWORD=" in " ".join(services["grafana"]["entrypoint"])


def test_the_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) >= 2
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.MULTILINE)
    for source in re.findall(r"^COPY (?:--\S+ )*(\S+) ", dockerfile, re.MULTILINE):
        if not source.startswith("--"):
            assert (ROOT / source).exists(), source
    assert not re.search(r"PASSWORD|SECRET|TOKEN", dockerfile)


def test_the_entrypoint_turns_secret_files_into_variables(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not-a-url")
    result = subprocess.run(
        [str(DEPLOY / "docker" / "entrypoint.sh"), "db", "status"],
        capture_output=True,
        text=True,
        env={
            "PATH": f"{URBANPULSE.parent}:{os.environ['PATH']}",
            "URBANPULSE_DATABASE_URL_FILE": str(secret),
        },
        check=False,
    )
    # The settings saw the file's content as URBANPULSE_DATABASE_URL (and refused it).
    assert result.returncode == 2
    assert "URBANPULSE_DATABASE_URL" in result.stderr
    assert "not-a-url" in result.stderr


def test_the_entrypoint_refuses_a_missing_secret_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(DEPLOY / "docker" / "entrypoint.sh"), "--help"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PGPASSWORD_FILE": str(tmp_path / "missing")},
        check=False,
    )
    assert result.returncode == 2
    assert "PGPASSWORD_FILE" in result.stderr


def _stack(dotenv: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The services as compose resolves them for this .env: the YAML is parsed first, then
    each string in it interpolated (so ``KEY: ${VAR:-}`` is an empty string, not a null), and
    ``$$`` is a literal dollar."""

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        if isinstance(node, str):
            return _interpolate(node, dotenv).replace("$$", "$")
        return node

    return dict(resolve(_compose())["services"])


def _replica_example() -> dict[str, str]:
    """The lines .env.example gives (commented out) for the ``replica`` profile."""
    return dict(
        re.findall(r"^#\s+(URBANPULSE_[A-Z_]+)=(\S+)$", (ROOT / ".env.example").read_text(), re.M)
    )


def test_compose_interpolation_as_emulated() -> None:
    # The rules the datasource test below relies on, as compose documents them.
    assert _interpolate("${A:-d}", {"A": ""}) == "d"
    assert _interpolate("${A-d}", {"A": ""}) == ""
    assert _interpolate("${A:-d}", {"A": "v"}) == "v"
    assert _interpolate("${A:+x}", {"A": "v"}) == "x"
    assert _interpolate("$${A}", {"A": "v"}) == "$${A}"
    with pytest.raises(ValueError, match="needed"):
        _interpolate("${A:?needed}", {"A": ""})


@pytest.mark.parametrize("replica", [False, True], ids=["primary", "replica"])
def test_grafanas_datasource_reads_the_standby_when_configured_else_the_primary(
    replica: bool,
) -> None:
    """The provisioned datasource's address, as Grafana would expand it in the environment
    compose gives its container (no Grafana server or Docker here: both expansions are
    emulated, compose's above and Grafana's in tests/dashboards/grafana_provisioning.py)."""
    dotenv = _env_example() | (_replica_example() if replica else {})
    services = _stack(dotenv)
    environment = {k: str(v) for k, v in services["grafana"]["environment"].items()}
    environment["URBANPULSE_PG_PASSWORD"] = "from-the-secret-file"
    (source,) = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "urbanpulse.yaml").read_text()
    )["datasources"]
    host, _, port = interpolate_value(source["url"], environment).partition(":")
    assert (host, port) == (("standby" if replica else "timescaledb"), "5432")
    # The role is the least-privilege login either way (the standby replays its grants).
    assert interpolate_value(source["user"], environment) == "grafana"
    assert interpolate_value(source["jsonData"]["database"], environment) == "urbanpulse"
    # And with an empty .env the default is the primary too: compose gives the default,
    # since Grafana's expansion has none.
    assert (
        _stack({"URBANPULSE_DOMAIN": "localhost"})["grafana"]["environment"]["URBANPULSE_PG_HOST"]
        == "timescaledb:5432"
    )
    # The API's reads go where the same .env says: nowhere else by default.
    read_url = services["api-1"]["environment"]["URBANPULSE_DATABASE_READ_URL"]
    if replica:
        assert read_url.startswith("postgresql://api@standby:5432/")
        assert services["standby"]["profiles"] == ["replica"]
    else:
        assert read_url == ""


def test_a_default_in_the_provisioning_file_would_silently_be_empty() -> None:
    # Why the default lives in compose.yaml, not in the datasource file.
    assert interpolate_value("${URBANPULSE_PG_HOST:-timescaledb:5432}", {}) == ""
    (source,) = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "urbanpulse.yaml").read_text()
    )["datasources"]

    def strings(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [s for value in node.values() for s in strings(value)]
        return [node] if isinstance(node, str) else []

    # Every value Grafana expands uses plain ${VAR} (the comments may say otherwise).
    assert "${URBANPULSE_PG_HOST}" in strings(source)
    assert [s for s in strings(source) if re.search(r"\$\{\w+[^\w}]", s)] == []


def test_the_standby_is_the_primarys_image_behind_the_replica_profile() -> None:
    services = _services()
    standby, primary = services["standby"], services["timescaledb"]
    assert standby["profiles"] == ["replica"]
    # A standby replays WAL: the same PostgreSQL and TimescaleDB build as the primary.
    assert standby["image"] == primary["image"]
    assert not primary.get("profiles")
    mounts = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in standby["volumes"]}
    entrypoint = mounts[standby["entrypoint"][0]]
    assert entrypoint == DEPLOY / "postgres" / "standby" / "entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    # Its own data volume, never the primary's.
    data = "/var/lib/postgresql/data"
    volume = next(v.split(":")[0] for v in standby["volumes"] if v.split(":")[1] == data)
    assert volume != next(v.split(":")[0] for v in primary["volumes"] if v.endswith(data))
    assert volume in _compose()["volumes"]
    assert standby["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    assert standby["environment"]["URBANPULSE_PRIMARY_HOST"] == "timescaledb"
    # Both ends of replication read the password from the same secret file.
    assert "db_replication_password" in standby["secrets"]
    assert "db_replication_password" in primary["secrets"]
    # The primary's image runs every init script of deploy/postgres/initdb/ (the replication
    # login among them) on its first start.
    initdb = {
        (DEPLOY / v.split(":")[0]).resolve()
        for v in primary["volumes"]
        if v.split(":")[1].startswith("/docker-entrypoint-initdb.d/")
    }
    assert initdb == set((DEPLOY / "postgres" / "initdb").glob("*.sh"))
    # Readers of the standby do not need it to exist without the profile.
    for name in ("grafana", "api-1", "api-2"):
        assert services[name]["depends_on"]["standby"]["required"] is False, name


def test_the_database_scripts_are_valid_shell() -> None:
    # Run for real by tests/fixtures/replica.py (deployed_pair) and tests/deploy/test_roles.py.
    for script in sorted((DEPLOY / "postgres").rglob("*.sh")):
        result = subprocess.run(
            ["sh", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (script, result.stderr)


def _mounted_secrets(service: Mapping[str, Any]) -> set[str]:
    """The paths of the secret files compose mounts into ``service``."""
    paths = set()
    for secret in service.get("secrets", []):
        target = secret if isinstance(secret, str) else secret.get("target") or secret["source"]
        paths.add(target if target.startswith("/") else f"/run/secrets/{target}")
    return paths


# The variables the image's entrypoint reads a file for (deploy/docker/entrypoint.sh), which
# refuses to start when that file cannot be read.
ENTRYPOINT_FILE = re.compile(r"(URBANPULSE_|PG)[A-Z0-9_]*_FILE")


def test_every_secret_file_a_service_is_told_of_is_mounted_in_it() -> None:
    """Review finding: the shared environment named the MQTT password file for every service,
    and the migrate and monitor services, which mount no MQTT secret, would stop at the
    entrypoint before their command ran."""
    checked = 0
    for name, service in _services().items():
        if not _ours(service):
            continue
        files = {
            key: value
            for key, value in (service.get("environment") or {}).items()
            if ENTRYPOINT_FILE.fullmatch(key)
        }
        assert sorted(set(files.values()) - _mounted_secrets(service)) == [], name
        checked += len(files)
    assert checked  # the check saw some


def test_the_retention_policies_are_applied_every_hour_as_the_database_owner() -> None:
    """In TimescaleDB mode only the owner of the hypertables and aggregates may drop chunks,
    delete rollup rows and move the aggregates' refresh windows; the ingestion role, which
    tries every hour, is refused (tests/deploy/test_roles.py). So a service of its own runs
    ``urbanpulse retention apply`` in a loop as the login the migrations run as: the schema's
    owner, not the superuser, whose password no service of ours holds."""
    services = _services()
    retention, migrate = services["retention"], services["migrate"]
    assert _ours(retention)
    argv = retention["command"]
    assert argv[:2] == ["retention", "apply"]
    assert "--dry-run" not in argv
    every = float(argv[argv.index("--every") + 1])
    assert 60 <= every <= 86400  # at least daily, as the policies count in days
    assert retention.get("restart", "unless-stopped") == "unless-stopped"
    owner_url = migrate["environment"]["URBANPULSE_DATABASE_URL"]
    assert retention["environment"]["URBANPULSE_DATABASE_URL"] == owner_url
    assert urlsplit(_interpolate(owner_url)).username == OWNER
    password = retention["environment"]["PGPASSWORD_FILE"]
    assert password == migrate["environment"]["PGPASSWORD_FILE"]
    for service in (retention, migrate):
        assert password in _mounted_secrets(service)
        assert {"source": "db_owner_password", "target": "db_password"} in service["secrets"]
    # The superuser's password is the database container's alone (its image sets it).
    holders = [
        name
        for name, service in services.items()
        for secret in service.get("secrets", [])
        if (secret if isinstance(secret, str) else secret["source"]) == "db_postgres_password"
    ]
    assert holders == ["timescaledb"]
    assert retention["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_notifier_runs_as_the_monitor_with_the_egress_and_smtp_settings() -> None:
    notifier = _services()["notifier"]
    assert notifier["command"] == ["notify", "run"]
    environment = notifier["environment"]
    assert environment["URBANPULSE_DATABASE_URL"].startswith("postgresql://monitor@timescaledb")
    assert {"source": "db_monitor_password", "target": "db_password"} in notifier["secrets"]
    for name in ("WEBHOOK_ALLOW_NETWORKS", "SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME"):
        assert f"URBANPULSE_{name}" in environment, name
    assert environment["URBANPULSE_SMTP_PASSWORD_FILE"] == "/run/secrets/smtp_password"
    # What compose hands over with an empty .env is what the settings read as "no e-mail,
    # global addresses only".
    dotenv = {"URBANPULSE_DOMAIN": "city.example"}
    interpolated = yaml.safe_load(_interpolate(COMPOSE.read_text(), dotenv))["services"]["notifier"]
    # (Compose interpolates inside the parsed string, giving ""; this emulation interpolates the
    # text first, giving YAML's null. The settings read both as unset.)
    assert interpolated["environment"]["URBANPULSE_SMTP_HOST"] in ("", None)
    assert interpolated["environment"]["URBANPULSE_WEBHOOK_ALLOW_NETWORKS"] in ("", None)


def test_the_api_judges_webhook_urls_with_the_notifiers_allowed_networks() -> None:
    # Subscriptions are made through the API: refused there exactly when the notifier would
    # refuse their deliveries (a city network allowed to one only would split the two).
    dotenv = {
        "URBANPULSE_DOMAIN": "city.example",
        "URBANPULSE_WEBHOOK_ALLOW_NETWORKS": "10.20.0.0/16",
    }
    services = yaml.safe_load(_interpolate(COMPOSE.read_text(), dotenv))["services"]
    for name in ("api-1", "api-2", "notifier"):
        assert services[name]["environment"]["URBANPULSE_WEBHOOK_ALLOW_NETWORKS"] == "10.20.0.0/16"
