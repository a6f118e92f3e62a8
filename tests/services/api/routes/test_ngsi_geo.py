"""Geo-queries and idPattern on the NGSI-LD subset, against a real database in both modes.

The cities and queries are those of FIWARE/NGSI-LD_TestSuite's contextConsumption tests (ids in
the test names): query_entities_geo_test.js 022-026, query_entities_errors_test.js 019-021 and
query_entities_test.js 034-035 (idPattern) and 044 (near). The suite writes its entities through
the API; this server is read-only, so they are registered sensors here, at the same coordinates.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.kinds import QUANTITIES
from services.storage.modes import storage_mode
from services.storage.writer import ReadingWriter
from tests.services.api.conftest import auth

Db = psycopg.Connection[tuple[object, ...]]
BASE = "/ngsi-ld/v1"
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
NOISE = "NoiseLevelObserved"
# (id, longitude, latitude) as in the suite's T_City entities.
CITIES = [
    ("madrid", -3.691944, 40.418889),
    ("leganes", -3.75, 40.316667),
    ("alcobendas", -3.633333, 40.533333),
]
MADRID = "[-3.691944,40.418889]"


def urn(local: str) -> str:
    return f"urn:ngsi-ld:{NOISE}:{local}"


@pytest.fixture
def reader(
    api_client: TestClient, api_keys: dict[str, str], api_db: Db, database_url: str
) -> TestClient:
    """The three cities as located noise sensors, one unlocated (never a geo match), a reading
    each; and an air-quality sensor in Madrid (another type)."""
    keys = []
    for sid, lon, lat in [*CITIES, ("nowhere", None, None)]:
        row = api_db.execute(
            "INSERT INTO sensors (id, kind, domain, interval_s, latitude, longitude) "
            "VALUES (%s, 'noise', 'environment', 60, %s, %s) RETURNING key",
            (sid, lat, lon),
        ).fetchone()
        assert row is not None
        keys.append(int(row[0]))  # type: ignore[call-overload]
    api_db.execute(
        "INSERT INTO sensors (id, kind, domain, interval_s, latitude, longitude) "
        "VALUES ('aq-madrid', 'air_quality', 'environment', 60, 40.418889, -3.691944)"
    )
    laeq = QUANTITIES["laeq"].key
    with psycopg.connect(database_url) as conn:
        rows = [(1.7e9, key, laeq, 50.0 + i) for i, key in enumerate(keys)]
        ReadingWriter(conn, storage_mode(conn)).write(rows)
        conn.commit()
    api_client.headers.update(auth(api_keys["service"]))
    return api_client


def _ids(reader: TestClient, **params: Any) -> list[str]:
    response = reader.get(f"{BASE}/entities", params=params)
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()]


def _near(reader: TestClient, georel: str, coordinates: str = MADRID) -> list[str]:
    return _ids(reader, type=NOISE, geometry="Point", coordinates=coordinates, georel=georel)


def test_near_max_distance_no_results_022(reader: TestClient) -> None:
    # A degree of latitude north of Madrid: 111 km from every city.
    assert _near(reader, "near;maxDistance==15", "[-3.691944,41.418889]") == []


def test_near_max_distance_the_three_results_023(reader: TestClient) -> None:
    assert sorted(_near(reader, "near;maxDistance==15000")) == sorted(urn(c[0]) for c in CITIES)


def test_near_max_distance_only_one_result_left_024(reader: TestClient) -> None:
    assert _near(reader, "near;maxDistance==1000") == [urn("madrid")]


def test_near_min_distance_only_two_results_025(reader: TestClient) -> None:
    assert sorted(_near(reader, "near;minDistance==1000")) == [urn("alcobendas"), urn("leganes")]


def test_near_a_band_between_min_and_max_distance(reader: TestClient) -> None:
    # Leganes is 11.9 km from Madrid, Alcobendas 13.3 km.
    assert _near(reader, "near;minDistance==1000;maxDistance==12500") == [urn("leganes")]


POLYGON = "[[[-3.65,40.316667],[-3.85,40.416667],[-3.85,40.216667],[-3.65,40.316667]]]"


def test_geo_query_near_044(reader: TestClient, api_db: Db) -> None:
    # The suite's T_Query entity at [-30.01, 75.01], 1.1 km from the query's point.
    api_db.execute(
        "INSERT INTO sensors (id, kind, domain, interval_s, latitude, longitude) "
        "VALUES ('greenland', 'noise', 'environment', 60, 75.01, -30.01)"
    )
    assert _near(reader, "near;maxDistance==3000", "[-30,75]") == [urn("greenland")]
    assert _near(reader, "near;maxDistance==1000", "[-30,75]") == []


def test_within_a_polygon_026(reader: TestClient) -> None:
    found = _ids(reader, type=NOISE, geometry="Polygon", coordinates=POLYGON, georel="within")
    assert found == [urn("leganes")]


def test_a_point_on_the_polygon_s_edge_intersects_but_is_not_within(reader: TestClient) -> None:
    # Leganes is the triangle's eastern vertex here.
    edge = "[[[-3.75,40.316667],[-3.85,40.416667],[-3.85,40.216667],[-3.75,40.316667]]]"
    params = {"type": NOISE, "geometry": "Polygon", "coordinates": edge}
    assert _ids(reader, **params, georel="within") == []
    assert _ids(reader, **params, georel="intersects") == [urn("leganes")]
    assert _ids(reader, **params, georel="disjoint") == [urn("alcobendas"), urn("madrid")]


def test_equals_a_point_and_geo_with_other_filters(reader: TestClient) -> None:
    params = {"geometry": "Point", "coordinates": MADRID, "georel": "equals"}
    # Without a type: every type located there (a geo-query alone is a valid query).
    assert sorted(_ids(reader, **params)) == [
        "urn:ngsi-ld:AirQualityObserved:aq-madrid",
        urn("madrid"),
    ]
    assert _ids(reader, **params, type=NOISE, q="LAeq>60") == []
    assert _ids(reader, **params, geoproperty="areaServed") == []  # not a GeoProperty


def test_query_by_id_pattern_034(reader: TestClient) -> None:
    assert _ids(reader, idPattern=f".*:{NOISE}:(madrid|leganes)$") == [
        urn("leganes"),
        urn("madrid"),
    ]
    assert _ids(reader, type=NOISE, idPattern="al") == [urn("alcobendas")]


def test_query_by_id_pattern_no_results_035(reader: TestClient) -> None:
    assert _ids(reader, idPattern=".*:T_Non_Present:EntityForQuery.*") == []


def test_geo_and_id_pattern_on_temporal_queries(reader: TestClient) -> None:
    params = {"type": NOISE, "timerel": "after", "timeAt": "2023-01-01T00:00:00Z"}
    near = {"geometry": "Point", "coordinates": MADRID, "georel": "near;maxDistance==1000"}
    for extra, want in [(near, [urn("madrid")]), ({"idPattern": "leg"}, [urn("leganes")])]:
        response = reader.get(f"{BASE}/temporal/entities", params={**params, **extra})
        assert response.status_code == 200, response.text
        assert [e["id"] for e in response.json()] == want


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"georel": "invalid", "geometry": "Point", "coordinates": "[-5,10]"}, "georel"),  # 019
        ({"georel": "near;maxDistance==1000", "geometry": "xxxxx", "coordinates": "[-5,10]"},
         "geometry"),  # 020
        ({"georel": "near;maxDistance==1000", "geometry": "Point", "coordinates": "[-5]"},
         "position"),  # 021
        ({"georel": "near", "geometry": "Point", "coordinates": MADRID}, "maxDistance"),
        ({"georel": "near;maxDistance==-3", "geometry": "Point", "coordinates": MADRID}, "metres"),
        ({"georel": "near;maxDistance=3", "geometry": "Point", "coordinates": MADRID}, "metres"),
        ({"georel": "near;maxDistance==9", "geometry": "Polygon", "coordinates": POLYGON},
         "Point"),
        ({"georel": "within;maxDistance==9", "geometry": "Polygon", "coordinates": POLYGON},
         "modifier"),
        ({"georel": "within", "geometry": "Polygon", "coordinates": "[[[0,0],[1,1],[0,1]]]"},
         "four"),
        ({"georel": "within", "geometry": "Polygon", "coordinates": "[[[0,0],[1,1],[0,1],[1,0]]]"},
         "ends"),
        ({"georel": "within", "geometry": "Point", "coordinates": "[200,10]"}, "longitude"),
        ({"georel": "within", "geometry": "Point", "coordinates": "not json"}, "JSON"),
        ({"georel": "within", "geometry": "Point"}, "coordinates"),
        ({"geoproperty": "location"}, "georel"),
        ({"georel": "within", "geometry": "Point", "coordinates": "[1,2]", "geoproperty": "a b"},
         "geoproperty"),
        ({"georel": "within", "geometry": "LineString", "coordinates": "[[1,2],[3,4]]"},
         "LineString"),
        ({"idPattern": "("}, "regular expression"),
        ({"idPattern": "(?<=a)b"}, "RE2"),
        ({"idPattern": "a" * 300}, "longer"),
    ],
)  # fmt: skip
def test_a_malformed_geo_query_or_id_pattern_is_bad_request_data(
    reader: TestClient, params: dict[str, str], word: str
) -> None:
    for path in ("/entities", "/temporal/entities"):
        response = reader.get(f"{BASE}{path}", params={"type": NOISE, **params})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["type"] == ERRORS + "BadRequestData"
        assert word in body["detail"]
