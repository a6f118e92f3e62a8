"""Every dashboard as Grafana JSON, and the committed copies under ``dashboards/generated/``.

Built with grafana-foundation-sdk's build for Grafana 11.6 (``pyproject.toml`` pins it), so
the JSON carries that version's schema. The output is deterministic (sorted keys, panel ids
and grid positions laid out here), so the committed files are exactly what the code makes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from . import city, domains, operations

GENERATED = Path(__file__).resolve().parent / "generated"
GRAFANA_VERSION = "11.6"

BOARDS: tuple[Callable[[], db.Dashboard], ...] = (
    city.build,
    *domains.DOMAIN_BOARDS,
    operations.build,
)


def dashboards() -> dict[str, dict[str, Any]]:
    """uid -> the dashboard's JSON model."""
    out: dict[str, dict[str, Any]] = {}
    for make in BOARDS:
        model: dict[str, Any] = json.loads(json.dumps(make().build(), cls=JSONEncoder))
        # Stable panel ids (the SDK leaves them unset): links and alerts refer to them.
        next_id = 1
        for panel in model.get("panels", []):
            for item in (panel, *panel.get("panels", [])):
                item["id"] = next_id
                next_id += 1
        out[model["uid"]] = model
    return out


def render(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(
    directory: Path = GENERATED, models: dict[str, dict[str, Any]] | None = None
) -> list[Path]:
    """Write every dashboard (``models``, else built now) to ``directory/<uid>.json``; remove
    stale ones. Returns paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    models = dashboards() if models is None else models
    for uid, model in models.items():
        path = directory / f"{uid}.json"
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    for stale in directory.glob("*.json"):
        if stale.stem not in models:
            stale.unlink()
    return written


def stale(directory: Path = GENERATED) -> list[str]:
    """Names of files in ``directory`` that differ from what the code generates (or lack)."""
    models = dashboards()
    wrong = [
        f"{uid}.json"
        for uid, model in models.items()
        if not (directory / f"{uid}.json").is_file()
        or (directory / f"{uid}.json").read_text(encoding="utf-8") != render(model)
    ]
    wrong += [p.name for p in directory.glob("*.json") if p.stem not in models]
    return sorted(wrong)


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's panels, rows' children included, rows themselves excluded."""
    found = []
    for panel in model.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found
