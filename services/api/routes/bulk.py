"""POST /v1/registry/bulk: register many districts, gateways and sensors at once, all or nothing.

The body is the manifest ``urbanpulse registry load`` reads (``application/json``) or a CSV of
sensors (``text/csv``, header = column names). Both go through ``services.storage.registry``,
so the API and the CLI accept and refuse exactly the same rows; one bad row refuses the whole
body with a 422 listing every bad row. ``?dry_run=true`` runs the whole load, constraints
included, and rolls it back.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Query, Request

from services.storage.registry import load

from ..deps import Conn, RegistryWriter
from ..models import BulkResult
from ..problems import Problem, invalid_all, responses

router = APIRouter(tags=["registry"])

_EXAMPLE = {
    "districts": [{"id": "centre", "name": "Centre", "population": 42000}],
    "gateways": [{"id": "gw-centre-1", "district_id": "centre"}],
    "sensors": [
        {
            "id": "wm-0001",
            "kind": "water_meter",
            "gateway_id": "gw-centre-1",
            "district_id": "centre",
        }
    ],
}


def _parse_json(data: bytes | str) -> Any:
    """The JSON value of ``data``, or a ValueError saying why not in the sender's terms: beside
    json's own syntax errors, a number of thousands of digits (past Python's int limit) and
    nesting past the recursion limit raise other errors, which were answered 500."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError:
        raise ValueError("a number has too many digits") from None


async def _body(request: Request) -> bytes:
    """The request body. Its size is bounded before it gets here: the body-limit middleware
    (``services.api.guards``) refuses a body past URBANPULSE_API_MAX_BODY_BYTES_BULK while it
    streams in."""
    return await request.body()


def _csv_manifest(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise invalid_all([("body", "CSV must be UTF-8")]) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise invalid_all([("body", "CSV needs a header line naming the columns")])
    rows: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    try:
        for index, row in enumerate(reader):
            if None in row:
                errors.append((f"sensors[{index}]", "more values than header columns"))
                continue
            # An empty cell is an absent value, so the registry's defaults apply.
            values: dict[str, Any] = {k: v for k, v in row.items() if v not in ("", None)}
            if "metadata" in values:
                try:
                    values["metadata"] = _parse_json(values["metadata"])
                except ValueError:
                    errors.append((f"sensors[{index}].metadata", "must be a JSON object"))
                    continue
            rows.append(values)
    except csv.Error as exc:
        raise invalid_all([("body", f"not CSV: {exc}")]) from None
    if errors:
        raise invalid_all(errors, f"{len(errors)} bad row(s); nothing was registered")
    return {"sensors": rows}


@router.post(
    "/registry/bulk",
    response_model=BulkResult,
    responses=responses(401, 403, 413, 415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "additionalProperties": True},
                    "example": _EXAMPLE,
                },
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "id,kind,gateway_id,district_id,latitude,longitude\n"
                    "wm-0001,water_meter,gw-centre-1,centre,45.07,7.68\n",
                },
            },
        }
    },
)
def bulk_register(
    conn: Conn,
    _: RegistryWriter,
    request: Request,
    body: Annotated[bytes, Depends(_body)],
    dry_run: Annotated[bool, Query(description="check and roll back")] = False,
) -> BulkResult:
    """Register a manifest (JSON) or a CSV of sensors, all or nothing; rows are upserted by
    id, so sending the same body twice changes nothing."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "text/csv":
        manifest: Any = _csv_manifest(body)
    elif media_type in ("application/json", ""):
        try:
            manifest = _parse_json(body)
        except ValueError as exc:
            raise invalid_all([("body", f"not JSON: {exc}")]) from None
    else:
        raise Problem(415, detail="send application/json (a manifest) or text/csv (sensors)")
    # A ManifestError lists every bad row; the one handler of domain errors answers it (422).
    try:
        result = load(conn, manifest)
    except psycopg.errors.IntegrityError as exc:
        # A row the checks passed but a table constraint refused (the load rolled back).
        diag = exc.diag.constraint_name or "a constraint"
        raise invalid_all([("body", f"refused by {diag}: {exc.diag.message_primary}")]) from None
    if dry_run:
        conn.rollback()
    return BulkResult(
        dry_run=dry_run,
        districts=result.districts,
        gateways=result.gateways,
        sensors=result.sensors,
    )
