"""Shared test configuration. The real-service fixtures live in tests/fixtures/ (plugins)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI gets more examples; a developer's run stays quick.
settings.register_profile("ci", max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# URBANPULSE_TEST_SCOPE=broker: only the tests whose answer can depend on which broker runs, for
# CI's second, newcomer run with the embedded broker (issue 10: "every test that touches a broker
# or the API"); the first run has already run everything else, which no broker reaches.
_BROKER_FIXTURES = frozenset(
    {"mqtt_broker", "own_broker", "embedded_broker", "mosquitto_available", "mqtt_connect"}
)
# Folders whose tests start brokers themselves (`up`, the browser's platform, the API's readiness
# probe, the deploy files run by a real Mosquitto) rather than through a fixture above.
_BROKER_FOLDERS = ("browser", "deploy", "services/api", "services/devstack", "bench")


def _touches_a_broker(item: pytest.Item) -> bool:
    if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    relative = item.path.relative_to(Path(__file__).parent).as_posix()
    if relative.startswith(_BROKER_FOLDERS):
        return True
    return _names_a_broker(item.path)


@functools.cache
def _names_a_broker(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    return "find_mosquitto" in text or "devstack" in text or "mqtt" in text.lower()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("URBANPULSE_TEST_SCOPE") != "broker":
        return
    kept, dropped = [], []
    for item in items:
        (kept if _touches_a_broker(item) else dropped).append(item)
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept
