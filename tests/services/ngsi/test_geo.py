"""The pure parts of the geo-queries and idPattern: distances, point-in-polygon, parsing."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.ngsi import geo
from services.ngsi.models import QueryError, compile_id_pattern

# A 10x10 square with a 2x2 hole in its middle, as GeoJSON rings (closed).
SQUARE = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0), (0.0, 0.0))
HOLE = ((4.0, 4.0), (6.0, 4.0), (6.0, 6.0), (4.0, 6.0), (4.0, 4.0))


def test_a_degree_of_latitude_is_about_111_km() -> None:
    assert geo.haversine_m((7.68, 45.0), (7.68, 46.0)) == pytest.approx(
        geo.EARTH_RADIUS_M * math.pi / 180
    )
    # Along the equator too, and symmetric.
    assert geo.haversine_m((1.0, 0.0), (0.0, 0.0)) == pytest.approx(111_195.08, abs=0.01)
    assert geo.haversine_m((0.0, 0.0), (180.0, 0.0)) == pytest.approx(math.pi * geo.EARTH_RADIUS_M)


@pytest.mark.parametrize(
    ("point", "place"),
    [
        ((1.0, 1.0), 1),
        ((5.0, 5.0), -1),  # in the hole
        ((4.0, 5.0), 0),  # on the hole's edge
        ((10.0, 5.0), 0),  # on the outer edge
        ((0.0, 0.0), 0),  # a vertex
        ((11.0, 5.0), -1),
        ((-1.0, 10.0), -1),  # level with a vertex, outside
        ((5.0, 10.0), 0),
    ],
)
def test_locate_inside_outside_and_on_the_boundary(point: tuple[float, float], place: int) -> None:
    assert geo.locate(point, (SQUARE, HOLE)) == place


@given(
    st.floats(-20, 20, allow_nan=False),
    st.floats(-20, 20, allow_nan=False),
    st.floats(-19, 19, allow_nan=False),
    st.floats(-19, 19, allow_nan=False),
    st.floats(0.5, 10, allow_nan=False),
    st.floats(0.5, 10, allow_nan=False),
)
def test_locate_agrees_with_a_rectangle_s_bounds(
    x: float, y: float, left: float, bottom: float, width: float, height: float
) -> None:
    right, top = left + width, bottom + height
    # Within the tolerance of an edge (about 0.1 mm) a point counts as on it: compare elsewhere.
    gaps = (abs(x - left), abs(x - right), abs(y - bottom), abs(y - top))
    assume(all(gap == 0 or gap > 1e-6 for gap in gaps))
    ring = ((left, bottom), (right, bottom), (right, top), (left, top), (left, bottom))
    place = geo.locate((x, y), (ring,))
    if left < x < right and bottom < y < top:
        assert place == 1
    elif x < left or x > right or y < bottom or y > top:
        assert place == -1
    else:
        assert place == 0


def _query(georel: str, geometry: str, coordinates: str) -> geo.GeoQuery:
    query = geo.parse(georel, geometry, coordinates)
    assert query is not None
    return query


def _at(lon: float, lat: float) -> dict[str, object]:
    return {"type": "Point", "coordinates": [lon, lat]}


def test_relations_of_a_point_against_an_area_and_a_point() -> None:
    polygon = "[[[0,0],[10,0],[10,10],[0,10],[0,0]],[[4,4],[6,4],[6,6],[4,6],[4,4]]]"
    cases = {
        "within": [True, False, False],
        "intersects": [True, True, False],
        "disjoint": [False, False, True],
        "equals": [False, False, False],
        "contains": [False, False, False],
        "overlaps": [False, False, False],
    }
    points = [_at(1, 1), _at(10, 5), _at(5, 5)]
    for georel, want in cases.items():
        query = _query(georel, "Polygon", polygon)
        assert [query.holds(p) for p in points] == want, georel
    assert _query(
        "within", "MultiPolygon", f"[{polygon}, [[[20,20],[21,20],[21,21],[20,20]]]]"
    ).holds(_at(20.9, 20.5))
    same, other = _at(7.68, 45.07), _at(7.69, 45.07)
    for georel in ("within", "equals", "contains", "intersects"):
        query = _query(georel, "Point", "[7.68, 45.07]")
        assert (query.holds(same), query.holds(other)) == (True, False), georel
    assert _query("disjoint", "Point", "[7.68, 45.07]").holds(other)
    # An entity without a point never matches.
    assert not _query("intersects", "Polygon", polygon).holds({"type": "Polygon"})
    assert not _query("disjoint", "Polygon", polygon).holds(None)


def test_no_geo_parameter_is_no_geo_query() -> None:
    assert geo.parse(None, None, None) is None
    with pytest.raises(QueryError, match="geoproperty"):
        geo.parse(None, None, None, "location")


@pytest.mark.parametrize(
    "pattern",
    [
        ".*:T_Query:EntityForQuery.*",
        "^urn:ngsi-ld:Air",
        "aq-[0-9]+$",
        "(?:aq|n)-1",
        "x*?y",
        r"\(a+\)+",
    ],
)
def test_ordinary_id_patterns_compile(pattern: str) -> None:
    assert compile_id_pattern(pattern).pattern == pattern


@pytest.mark.parametrize(
    "pattern", ["(a+)+$", "((a*))*b", "(a|aa)*b", "((a|a))*b", "(x{2,})+y", ".*.*.*.*x"]
)
def test_patterns_that_backtrack_exponentially_run_in_linear_time(pattern: str) -> None:
    # Each would take Python's re seconds to forever on this id (review: ((a|a))*b, 2.5 s at 24
    # characters and doubling with each); RE2 answers without backtracking.
    assert compile_id_pattern(pattern).search("a" * 20_000 + "!") is None


@pytest.mark.parametrize(
    ("pattern", "word"),
    [
        ("", "empty"),
        ("[", "regular expression"),
        ("(?=lookahead)", "regular expression RE2 takes"),
        (r"(a)\1", "regular expression RE2 takes"),
        ("a" * 257, "longer"),
    ],
)
def test_costly_or_broken_id_patterns_are_refused(pattern: str, word: str) -> None:
    with pytest.raises(QueryError, match=word):
        compile_id_pattern(pattern)


@pytest.mark.parametrize("geometry", ["Point", "Polygon", "MultiPolygon"])
@pytest.mark.parametrize(
    "coordinates", ["[" * 5000 + "]" * 5000, "[NaN, 1]", "[1e400, 1]", "{}", "[true, 1]", "["]
)
def test_malformed_coordinates_are_a_query_error(geometry: str, coordinates: str) -> None:
    with pytest.raises(QueryError):
        geo.parse("intersects", geometry, coordinates)
