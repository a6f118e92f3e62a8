"""Push the generated dashboards to a running Grafana through its HTTP API (grafana-client).

grafana-client is imported here, inside :func:`push`, and nowhere else, so building the
dashboards (and everything else in the package) never loads it: from version 4 on it brings
niquests and urllib3-future, whose urllib3 replacement breaks requests-based tools (we hold it
below 4, but a user's environment may have a newer one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FOLDER_UID = "urbanpulse"


class PushError(Exception):
    """Grafana refused a request; ``status`` is its HTTP status (None: it did not answer)."""

    def __init__(self, what: str, status: int | None, detail: str) -> None:
        super().__init__(f"{what}: {status or 'no answer'} {detail}".strip())
        self.what = what
        self.status = status


@dataclass(frozen=True, slots=True)
class Pushed:
    uid: str
    url: str
    version: int


def push(
    url: str,
    token: str,
    models: Iterable[dict[str, Any]],
    folder: str = "UrbanPulse",
    timeout: float = 10.0,
) -> list[Pushed]:
    """Create the folder if missing, then save each dashboard in it (overwriting its previous
    version: the code is the source of truth)."""
    try:
        from grafana_client.api import GrafanaApi  # noqa: PLC0415 - see the module docstring
        from grafana_client.client import GrafanaClientError, GrafanaException  # noqa: PLC0415
    except ImportError as exc:
        raise PushError("the push needs grafana-client", None, f"({exc.name} is missing)") from None

    api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    try:
        try:
            api.folder.get_folder(FOLDER_UID)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.folder.create_folder(folder, uid=FOLDER_UID)
        pushed = []
        for model in models:
            answer = api.dashboard.update_dashboard(
                {
                    "dashboard": {**model, "id": None},
                    "folderUid": FOLDER_UID,
                    "overwrite": True,
                    "message": "urbanpulse dashboards push",
                }
            )
            pushed.append(Pushed(model["uid"], str(answer.get("url", "")), int(answer["version"])))
        return pushed
    except GrafanaException as exc:
        status = getattr(exc, "status_code", None)
        raise PushError("Grafana refused the push", status, str(exc)) from None
    except Exception as exc:  # the HTTP layer's own errors (refused connection, timeout)
        http_layers = {"requests", "niquests", "urllib3", "urllib3_future"}
        if type(exc).__module__.split(".")[0] in http_layers:
            raise PushError(f"Grafana at {url}", None, str(exc)) from None
        raise
