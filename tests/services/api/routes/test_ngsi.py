"""The NGSI-LD subset at /ngsi-ld/v1 against a real database, in both storage modes.

Cases follow FIWARE/NGSI-LD_TestSuite where they apply to a read-only server (its test numbers
in the names): retrieve entity (052-056), query errors (005, 017, 018), pagination (027, 028),
temporal retrieval (168); the temporal cases check the aggregated and raw representations
against the readings written. Geo-queries and idPattern are in test_ngsi_geo.py.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.kinds import QUANTITIES
from services.api.routes import ngsi
from services.ngsi import models
from services.storage import rollups
from services.storage.modes import storage_mode
from services.storage.writer import ReadingWriter
from tests.services.api.conftest import auth

Db = psycopg.Connection[tuple[object, ...]]
BASE = "/ngsi-ld/v1"
LD = {"Accept": "application/ld+json"}
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
AQ = "urn:ngsi-ld:AirQualityObserved:aq-1"
AQ2 = "urn:ngsi-ld:AirQualityObserved:aq-2"

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
START = NOW - timedelta(hours=3)


def pm25(i: int) -> float:
    """The aq-1 reading of minute ``i`` after START."""
    return float(i % 30) + 0.5


def _sensor(db: Db, sid: str, kind: str, domain: str, **extra: Any) -> int:
    columns = ["id", "kind", "domain", "interval_s", *extra]
    row = db.execute(
        f"INSERT INTO sensors ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) RETURNING key",
        (sid, kind, domain, 60, *extra.values()),
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


@pytest.fixture
def city(api_db: Db, database_url: str) -> None:
    """aq-1 (located, district d-north) with a pm25 and pm10 reading a minute for 3 hours;
    aq-2 with none; n-1 (noise, no location) and t-1 (traffic) with one reading each; aq-old
    retired; one KPI value. Rolled up."""
    api_db.execute("INSERT INTO districts (id, name) VALUES ('d-north', 'North')")
    aq = _sensor(
        api_db, "aq-1", "air_quality", "environment",
        district_id="d-north", latitude=45.07, longitude=7.68,
    )  # fmt: skip
    _sensor(api_db, "aq-2", "air_quality", "environment")  # nothing read yet
    noise = _sensor(api_db, "n-1", "noise", "environment")
    traffic = _sensor(api_db, "t-1", "traffic_counter", "traffic")
    old = _sensor(api_db, "aq-old", "air_quality", "environment", status="retired")
    q = {name: QUANTITIES[name].key for name in ("pm25", "pm10", "laeq", "speed")}
    rows = []
    for i in range(180):
        moment = (START + timedelta(minutes=i)).timestamp()
        rows.append((moment, aq, q["pm25"], pm25(i)))
        rows.append((moment, aq, q["pm10"], 40.0))
    last = (NOW - timedelta(minutes=1)).timestamp()
    rows += [(last, noise, q["laeq"], 64.0), (last, traffic, q["speed"], 10.0)]
    rows.append((last, old, q["pm25"], 99.0))
    with psycopg.connect(database_url) as conn:
        mode = storage_mode(conn)
        ReadingWriter(conn, mode).write(rows)
        conn.commit()
        rollups.refresh(conn, mode, now=NOW + timedelta(minutes=1))
    api_db.execute(
        "INSERT INTO kpi_current (kpi_id, scope, period, period_start, period_end, value, "
        "rating, body) VALUES ('ENV-1', 'city', 'month', %s, %s, 17.5, 'met', '{}')",
        (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
    )


@pytest.fixture
def reader(api_client: TestClient, api_keys: dict[str, str], city: None) -> TestClient:
    api_client.headers.update(auth(api_keys["service"]))
    return api_client


def _problem(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == ERRORS + kind
    return body


# --- retrieve entity -----------------------------------------------------------------------------


def test_retrieve_the_entity_052(reader: TestClient) -> None:
    response = reader.get(f"{BASE}/entities/{AQ}", headers=LD)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/ld+json")
    body = response.json()
    assert body["id"] == AQ
    assert body["type"] == "AirQualityObserved"
    assert body["pm25"] == {
        "type": "Property",
        "value": pm25(179),
        "observedAt": (NOW - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        "unitCode": "GQ",
    }
    assert body["location"]["value"]["coordinates"] == [7.68, 45.07]
    assert body["areaServed"]["value"] == "d-north"
    assert body["@context"][-1] == models.CORE_CONTEXT


def test_plain_json_gets_the_context_in_a_link_header(reader: TestClient) -> None:
    response = reader.get(f"{BASE}/entities/{AQ}", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert "@context" not in response.json()
    assert models.CORE_CONTEXT in response.headers["link"]
    assert 'rel="http://www.w3.org/ns/json-ld#context"' in response.headers["link"]


def test_retrieve_the_entity_key_values_053(reader: TestClient) -> None:
    body = reader.get(f"{BASE}/entities/{AQ}", params={"options": "keyValues"}).json()
    assert body["pm25"] == pm25(179)
    assert body["pm10"] == 40.0
    assert body["dateObserved"] == (NOW - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")


def test_retrieve_the_entity_attribute_projection_054(reader: TestClient) -> None:
    body = reader.get(
        f"{BASE}/entities/{AQ}", params={"attrs": "pm10", "options": "keyValues"}, headers=LD
    ).json()
    assert set(body) == {"id", "type", "pm10", "@context"}


def test_an_entity_that_does_not_exist_is_not_found_056(reader: TestClient) -> None:
    for missing in (
        "urn:ngsi-ld:AirQualityObserved:nope",
        "urn:ngsi-ld:AirQualityObserved:n-1",  # a sensor, but not of that type
        "urn:ngsi-ld:AirQualityObserved:aq-old",  # retired
        "urn:ngsi-ld:Vehicle:v-1",
    ):
        _problem(reader.get(f"{BASE}/entities/{missing}"), 404, "ResourceNotFound")
    _problem(reader.get(f"{BASE}/entities/not-a-uri"), 400, "BadRequestData")


def test_a_kpi_value_is_a_key_performance_indicator(reader: TestClient) -> None:
    eid = "urn:ngsi-ld:KeyPerformanceIndicator:ENV-1:city:month"
    body = reader.get(f"{BASE}/entities/{eid}", params={"options": "keyValues"}).json()
    assert body["kpiValue"] == 17.5
    assert body["currentStanding"] == "good"
    assert body["calculationPeriod"] == {"from": "2026-03-01", "to": "2026-03-31"}


# --- query entities ------------------------------------------------------------------------------


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()]


def test_query_by_type_no_limit_027(reader: TestClient) -> None:
    ids = _ids(reader.get(f"{BASE}/entities", params={"type": "AirQualityObserved"}))
    assert ids == [AQ, AQ2]  # the retired sensor is not served
    both = "AirQualityObserved,NoiseLevelObserved"
    ids = _ids(reader.get(f"{BASE}/entities", params={"type": both}))
    assert ids == [AQ, AQ2, "urn:ngsi-ld:NoiseLevelObserved:n-1"]


def test_one_type_is_paged_in_the_database_like_any_other_query(reader: TestClient) -> None:
    params: dict[str, Any] = {"type": "AirQualityObserved", "limit": 1, "count": "true"}
    pages = [reader.get(f"{BASE}/entities", params={**params, "offset": n}) for n in range(3)]
    assert [_ids(p) for p in pages] == [[AQ], [AQ2], []]
    assert {p.headers["NGSILD-Results-Count"] for p in pages} == {"2"}
    # The same page through the in-memory path (a q that every entity passes).
    filtered = {**params, "offset": 1, "q": "name"}
    assert _ids(reader.get(f"{BASE}/entities", params=filtered)) == [AQ2]
    one = {"id": AQ2, "type": "AirQualityObserved", "count": "true"}
    assert reader.get(f"{BASE}/entities", params=one).headers["NGSILD-Results-Count"] == "1"


def test_query_by_type_limit_1_and_count_028(reader: TestClient) -> None:
    params: dict[str, Any] = {"attrs": "dateModified", "limit": 1, "count": "true"}
    first = reader.get(f"{BASE}/entities", params=params)
    assert len(_ids(first)) == 1
    assert first.headers["NGSILD-Results-Count"] == "3"  # aq-1, n-1, t-1; aq-2 read nothing
    seen = [
        _ids(reader.get(f"{BASE}/entities", params={**params, "offset": offset}))
        for offset in range(4)
    ]
    assert [len(s) for s in seen] == [1, 1, 1, 0]
    assert len({s[0] for s in seen[:3]}) == 3


def test_query_by_id_and_q(reader: TestClient) -> None:
    # The suite's 032 (by id), 036-037 (a condition over a value, with and without results) and
    # 038 (and); 039-043 (or, parentheses, observedAt, sub-properties) are not in this subset.
    ids = "urn:ngsi-ld:NoiseLevelObserved:n-1,urn:ngsi-ld:TrafficFlowObserved:t-1"
    assert _ids(reader.get(f"{BASE}/entities", params={"id": ids})) == ids.split(",")
    loud = {"type": "NoiseLevelObserved", "q": "LAeq>60"}
    assert _ids(reader.get(f"{BASE}/entities", params=loud)) == [
        "urn:ngsi-ld:NoiseLevelObserved:n-1"
    ]
    quiet = {"type": "NoiseLevelObserved", "q": "LAeq>70"}
    assert _ids(reader.get(f"{BASE}/entities", params=quiet)) == []
    north = {"q": 'areaServed=="d-north";pm10==40'}
    assert _ids(reader.get(f"{BASE}/entities", params=north)) == [AQ]
    speed = {"type": "TrafficFlowObserved", "q": "averageVehicleSpeed==36", "options": "keyValues"}
    assert _ids(reader.get(f"{BASE}/entities", params=speed)) == [
        "urn:ngsi-ld:TrafficFlowObserved:t-1"
    ]


def test_no_entity_type_nor_attributes_is_a_bad_request_017(reader: TestClient) -> None:
    _problem(reader.get(f"{BASE}/entities"), 400, "BadRequestData")


@pytest.mark.parametrize(
    "params",
    [
        {"type": "AirQualityObserved", "q": "pm25>>3"},
        {"type": "AirQualityObserved", "q": "(pm25>3)"},
        {"type": "AirQualityObserved", "limit": "-1"},
        {"type": "AirQualityObserved", "limit": "5000"},
        {"type": "AirQualityObserved", "offset": "x"},
        {"type": "AirQualityObserved", "options": "sideways"},
    ],
)
def test_a_malformed_query_is_a_bad_request_018(reader: TestClient, params: dict[str, str]) -> None:
    body = _problem(reader.get(f"{BASE}/entities", params=params), 400, "BadRequestData")
    assert body["detail"]


def test_an_accept_header_without_json_is_refused_005(reader: TestClient) -> None:
    response = reader.get(
        f"{BASE}/entities", params={"type": "AirQualityObserved"}, headers={"Accept": "text/html"}
    )
    _problem(response, 406, "NotAcceptable")


def test_the_api_key_is_required(api_client: TestClient, city: None) -> None:
    response = api_client.get(f"{BASE}/entities", params={"type": "AirQualityObserved"})
    assert response.status_code == 401


# --- temporal ------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def expected(start: datetime, end: datetime, width: timedelta) -> list[dict[str, Any]]:
    """The pm25 aggregates per ``width`` bucket of [start, end), from the values written; a
    bucket cut by start or end starts or stops there."""
    buckets: dict[datetime, list[float]] = defaultdict(list)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for i in range(180):
        moment = START + timedelta(minutes=i)
        if start <= moment < end:
            buckets[epoch + (moment - epoch) // width * width].append(pm25(i))
    return [
        {
            "from": _iso(max(b, start)),
            "to": _iso(min(b + width, end)),
            "avg": sum(v) / len(v),
            "min": min(v),
            "max": max(v),
            "sum": sum(v),
            "totalCount": len(v),
        }
        for b, v in sorted(buckets.items())
    ]


def _temporal(reader: TestClient, **params: Any) -> Any:
    return reader.get(f"{BASE}/temporal/entities", params={"timerel": "between", **params})


@pytest.mark.parametrize(
    ("duration", "width"), [("PT1H", timedelta(hours=1)), ("PT1M", timedelta(minutes=1))]
)
def test_aggregated_temporal_values_come_from_the_rollups(
    reader: TestClient, duration: str, width: timedelta
) -> None:
    # Off the hour at both ends, so the edge buckets are cut.
    start = START + timedelta(minutes=37, seconds=30)
    end = NOW - timedelta(minutes=21)
    response = _temporal(
        reader,
        type="AirQualityObserved",
        attrs="pm25",
        timeAt=_iso(start),
        endTimeAt=_iso(end),
        aggrMethods="avg,min,max,sum,totalCount",
        aggrPeriodDuration=duration,
    )
    assert response.status_code == 200, response.text
    [entity] = response.json()
    assert entity["id"] == AQ
    assert set(entity) == {"id", "type", "pm25"}  # attrs, and no @context for plain JSON
    attribute = entity["pm25"]
    want = expected(start, end, width)
    assert len(want) >= 3
    for method in ("avg", "min", "max", "sum", "totalCount"):
        got = attribute[method]
        assert [(g[1], g[2]) for g in got] == [(w["from"], w["to"]) for w in want]
        assert [g[0] for g in got] == pytest.approx([w[method] for w in want])


def test_temporal_retrieval_of_one_entity(reader: TestClient) -> None:
    response = reader.get(
        f"{BASE}/temporal/entities/{AQ}",
        params={
            "timerel": "between",
            "timeAt": _iso(START),
            "endTimeAt": _iso(NOW),
            "aggrMethods": "max",
            "aggrPeriodDuration": "P1D",
        },
        headers=LD,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == AQ
    assert "@context" in body
    # pm25 and pm10 both, all three hours in one day or two.
    assert max(v[0] for v in body["pm25"]["max"]) == 29.5
    assert {v[0] for v in body["pm10"]["max"]} == {40.0}


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"aggrPeriodDuration": "PT15M"}, "aggrPeriodDuration"),
        ({"aggrMethods": "median"}, "median"),
        ({"aggrMethods": None}, "aggrMethods"),
        ({"timerel": "before"}, "timerel"),
        ({"timeAt": "yesterday"}, "timeAt"),
        ({"endTimeAt": "2026-01-01T00:00:00"}, "time zone"),
        ({"endTimeAt": _iso(START - timedelta(hours=1))}, "after"),
        ({"timeAt": _iso(START - timedelta(days=400)), "aggrPeriodDuration": "PT1M"}, "narrow"),
        ({"type": "KeyPerformanceIndicator"}, "KPI"),
    ],
)
def test_temporal_query_errors_are_bad_request_data(
    reader: TestClient, change: dict[str, Any], word: str
) -> None:
    params: dict[str, Any] = {
        "type": "AirQualityObserved",
        "timerel": "between",
        "timeAt": _iso(START),
        "endTimeAt": _iso(NOW),
        "aggrMethods": "avg",
        "aggrPeriodDuration": "PT1H",
    }
    params.update(change)
    params = {k: v for k, v in params.items() if v is not None}
    response = reader.get(f"{BASE}/temporal/entities", params=params)
    body = _problem(response, 400, "BadRequestData")
    assert word in body["detail"]


# --- temporal, raw instances ---------------------------------------------------------------------


def _instants(attribute: list[dict[str, Any]]) -> list[str]:
    return [i["observedAt"] for i in attribute]


def _minute(i: int) -> str:
    return _iso(START + timedelta(minutes=i))


def test_raw_temporal_values_between_in_normalized_form(reader: TestClient) -> None:
    response = reader.get(
        f"{BASE}/temporal/entities",
        params={
            "type": "AirQualityObserved",
            "timerel": "between",
            "timeAt": _minute(10),
            "endTimeAt": _minute(20),
        },
    )
    assert response.status_code == 200, response.text
    [entity] = response.json()  # aq-2 has no instance: left out
    assert entity["id"] == AQ
    assert entity["pm25"] == [
        {"type": "Property", "value": pm25(i), "observedAt": _minute(i), "unitCode": "GQ"}
        for i in range(10, 20)  # timeAt included, endTimeAt not
    ]
    assert [i["value"] for i in entity["pm10"]] == [40.0] * 10


def test_raw_temporal_values_in_the_simplified_form(reader: TestClient) -> None:
    response = reader.get(
        f"{BASE}/temporal/entities/{AQ}",
        params={
            "attrs": "pm25",
            "timerel": "before",
            "timeAt": _minute(3),
            "options": "temporalValues",
        },
        headers=LD,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "type", "pm25", "@context"}
    assert body["pm25"] == {
        "type": "Property",
        "values": [[pm25(i), _minute(i)] for i in range(3)],  # strictly before timeAt
    }


def test_retrieve_temporal_entity_168(reader: TestClient) -> None:
    # No timerel: the whole history (180 readings, under the bound of one answer).
    response = reader.get(f"{BASE}/temporal/entities/{AQ}")
    assert response.status_code == 200, response.text
    assert _instants(response.json()["pm25"]) == [_minute(i) for i in range(180)]
    # An entity with no instance is still found, with no attribute.
    response = reader.get(f"{BASE}/temporal/entities/{AQ2}")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": AQ2, "type": "AirQualityObserved"}


def test_after_is_strict_and_last_n_takes_the_newest_oldest_first(reader: TestClient) -> None:
    params = {"attrs": "pm25", "timerel": "after", "timeAt": _minute(170)}
    after = reader.get(f"{BASE}/temporal/entities/{AQ}", params=params).json()
    assert _instants(after["pm25"]) == [_minute(i) for i in range(171, 180)]
    last = reader.get(f"{BASE}/temporal/entities/{AQ}", params={**params, "lastN": "3"})
    assert last.status_code == 200  # lastN under the bound: complete, no Content-Range
    assert "content-range" not in last.headers
    assert _instants(last.json()["pm25"]) == [_minute(i) for i in (177, 178, 179)]
    between = {"timerel": "between", "timeAt": _minute(0), "endTimeAt": _minute(50)}
    last = reader.get(f"{BASE}/temporal/entities/{AQ}", params={**between, "lastN": "2"})
    assert _instants(last.json()["pm10"]) == [_minute(48), _minute(49)]


BIG = "urn:ngsi-ld:AirQualityObserved:aq-big"


@pytest.fixture
def big(api_db: Db, database_url: str, city: None) -> datetime:
    """aq-big: 1100 pm25 readings a minute from its start (returned) and 50 pm10 readings from
    minute 990; more than one answer carries (MAX_INSTANCES)."""
    key = _sensor(api_db, "aq-big", "air_quality", "environment")
    first = START - timedelta(days=1)
    q25, q10 = QUANTITIES["pm25"].key, QUANTITIES["pm10"].key
    rows = [((first + timedelta(minutes=i)).timestamp(), key, q25, float(i)) for i in range(1100)]
    rows += [
        ((first + timedelta(minutes=i)).timestamp(), key, q10, float(i)) for i in range(990, 1040)
    ]
    with psycopg.connect(database_url) as conn:
        ReadingWriter(conn, storage_mode(conn)).write(rows)
        conn.commit()
    return first


def test_past_the_bound_a_206_names_the_complete_span_and_the_rest_follows(
    reader: TestClient, big: datetime
) -> None:
    assert ngsi.MAX_INSTANCES == 1000
    params = {"timerel": "after", "timeAt": _iso(big - timedelta(seconds=1))}
    response = reader.get(f"{BASE}/temporal/entities/{BIG}", params=params)
    assert response.status_code == 206, response.text
    cut = big + timedelta(minutes=999)  # pm25's 1000th instance
    assert response.headers["content-range"] == f"date-time {params['timeAt']}-{_iso(cut)}/*"
    body = response.json()
    assert len(body["pm25"]) == 1000
    # pm10 is cut at the same instant, so the answer is complete up to it.
    assert [i["value"] for i in body["pm10"]] == [float(i) for i in range(990, 1000)]
    rest = reader.get(
        f"{BASE}/temporal/entities/{BIG}", params={"timerel": "after", "timeAt": _iso(cut)}
    )
    assert rest.status_code == 200, rest.text
    for name, count in (("pm25", 1100), ("pm10", 50)):
        seen = _instants(body[name]) + _instants(rest.json()[name])
        assert len(seen) == len(set(seen)) == count


def test_the_answer_has_a_bound_of_its_own_and_the_pages_cover_every_instance_once(
    reader: TestClient, big: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review finding: the bound was per attribute only, so a page of many sensors read without
    # limit. With the answer's bound below one attribute's, the first attribute read spends it.
    monkeypatch.setattr(ngsi, "MAX_ANSWER_INSTANCES", 300)
    seen: dict[str, list[str]] = {"pm25": [], "pm10": []}
    params = {"timerel": "after", "timeAt": _iso(big - timedelta(seconds=1))}
    for _ in range(20):  # 1150 instances, at most 301 a page
        response = reader.get(f"{BASE}/temporal/entities/{BIG}", params=params)
        assert response.status_code in (200, 206), response.text
        body = response.json()
        assert sum(len(body.get(name, [])) for name in seen) <= 301
        for name in seen:
            seen[name] += _instants(body.get(name, []))
        if response.status_code == 200:
            break
        end = response.headers["content-range"].removeprefix("date-time ").split("/")[0]
        params["timeAt"] = end[len(params["timeAt"]) + 1 :]
    else:
        pytest.fail("the pages never ended")
    for name, count in (("pm25", 1100), ("pm10", 50)):
        assert len(seen[name]) == len(set(seen[name])) == count


def test_last_n_past_the_bound_is_cut_to_the_newest(reader: TestClient, big: datetime) -> None:
    response = reader.get(
        f"{BASE}/temporal/entities/{BIG}", params={"attrs": "pm25", "lastN": "1050"}
    )
    assert response.status_code == 206, response.text
    values = [i["value"] for i in response.json()["pm25"]]
    assert values == [float(i) for i in range(100, 1100)]
    newest, oldest = big + timedelta(minutes=1099), big + timedelta(minutes=100)
    assert response.headers["content-range"] == f"date-time {_iso(newest)}-{_iso(oldest)}/1050"


def test_a_cut_applies_across_entities_of_a_query(reader: TestClient, big: datetime) -> None:
    response = reader.get(
        f"{BASE}/temporal/entities",
        params={"type": "AirQualityObserved", "attrs": "pm25", "timerel": "before",
                "timeAt": _iso(NOW)},
    )  # fmt: skip
    assert response.status_code == 206, response.text
    # aq-big's cut falls before aq-1's first reading: aq-1 comes on the next page.
    assert [e["id"] for e in response.json()] == [BIG]
    # No timeAt to start from: the span starts at the first instance sent.
    cut = big + timedelta(minutes=999)
    assert response.headers["content-range"] == f"date-time {_iso(big)}-{_iso(cut)}/*"


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"timerel": "after"}, "timeAt"),
        ({"timerel": "after", "timeAt": _iso(START), "endTimeAt": _iso(NOW)}, "endTimeAt"),
        ({"timeAt": _iso(START)}, "timerel"),
        ({"timerel": "around", "timeAt": _iso(START)}, "timerel"),
        ({"timerel": "before", "timeAt": "0001-01-01T00:00:00+01:00"}, "range"),
        ({"lastN": "0"}, "lastN"),
        ({"lastN": "many"}, "lastN"),
        ({"options": "sideways"}, "temporalValues"),
        ({"timeproperty": "modifiedAt"}, "observedAt"),
        ({"q": "pm25>3"}, "q"),
        ({"aggrMethods": "avg", "aggrPeriodDuration": "PT1H", "lastN": "3"}, "lastN"),
    ],
)
def test_raw_temporal_query_errors_are_bad_request_data(
    reader: TestClient, params: dict[str, str], word: str
) -> None:
    response = reader.get(
        f"{BASE}/temporal/entities", params={"type": "AirQualityObserved", **params}
    )
    body = _problem(response, 400, "BadRequestData")
    assert word in body["detail"]
