"""NGSI-LD geo-queries (ETSI GS CIM 009, clause 4.10) over entities located by a point.

Pure: :func:`parse` reads the ``georel``, ``geometry``, ``coordinates`` and ``geoproperty``
parameters into a :class:`GeoQuery` (a :class:`~services.ngsi.models.QueryError` saying what is
wrong otherwise) and :meth:`GeoQuery.holds` tells whether an entity's GeoJSON geometry satisfies
it. Every entity this server emits is located by a ``Point`` (a sensor's registered position), so
the relations are those of a point against the query's geometry:

- ``near;maxDistance==m`` / ``near;minDistance==m``: great-circle distance (haversine, mean
  Earth radius) to the query's ``Point``, in metres, bounds included.
- ``within``: strictly inside a ``Polygon``/``MultiPolygon`` (holes excluded, the boundary is
  not inside, as in the OGC relation), or the same point as a ``Point``.
- ``intersects``: inside or on the boundary; ``disjoint`` is its negation.
- ``equals``/``contains``: the same point as a ``Point`` query; ``overlaps`` never holds between
  points.

Polygons are tested in the plane of longitude and latitude, as GeoJSON's own planar
interpretation does; fine at a city's scale, wrong across the antimeridian.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .models import QueryError

# WGS 84's mean radius (IUGG), the usual one for haversine distances.
EARTH_RADIUS_M = 6_371_008.8
GEORELS = ("near", "within", "contains", "intersects", "disjoint", "equals", "overlaps")
GEOMETRIES = ("Point", "Polygon", "MultiPolygon")
# A query's coordinates are a short URL parameter; a city boundary fits in far less.
MAX_COORDINATES_CHARS = 20_000
_NAME = re.compile(r"^[A-Za-z_][\w\-]*$")
_DISTANCE = re.compile(r"^(maxDistance|minDistance)==(.+)$")
# Two positions this close (in degrees, about 0.1 mm) are the same point.
_SAME = 1e-9

Position = tuple[float, float]
Ring = tuple[Position, ...]
Polygon = tuple[Ring, ...]


@dataclass(frozen=True, slots=True)
class GeoQuery:
    georel: str
    geometry: str
    # Point: one position; Polygon: one polygon; MultiPolygon: several.
    point: Position | None
    polygons: tuple[Polygon, ...]
    geoproperty: str = "location"
    max_distance: float | None = None
    min_distance: float | None = None
    # Each polygon's bounding box (west, south, east, north): a point outside it is outside the
    # polygon without walking its edges, which is most sensors of a city for most queries.
    boxes: tuple[tuple[float, float, float, float], ...] = field(init=False)

    def __post_init__(self) -> None:
        boxes = []
        for exterior, *_holes in self.polygons:
            xs, ys = [x for x, _ in exterior], [y for _, y in exterior]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
        object.__setattr__(self, "boxes", tuple(boxes))

    def holds(self, geometry: Any) -> bool:
        """Whether an entity's GeoJSON geometry (the geoproperty's value) satisfies the query;
        False for anything but a Point."""
        position = _entity_point(geometry)
        if position is None:
            return False
        if self.georel == "near":
            assert self.point is not None  # parse() allows near with a Point only
            distance = haversine_m(position, self.point)
            return (self.max_distance is None or distance <= self.max_distance) and (
                self.min_distance is None or distance >= self.min_distance
            )
        if self.point is not None:
            same = _same(position, self.point)
            if self.georel == "disjoint":
                return not same
            return same and self.georel != "overlaps"
        x, y = position
        places = [
            locate(position, polygon) if west <= x <= east and south <= y <= north else -1
            for polygon, (west, south, east, north) in zip(self.polygons, self.boxes, strict=True)
        ]
        inside = any(p > 0 for p in places)
        touches = any(p >= 0 for p in places)
        if self.georel == "within":
            return inside
        if self.georel == "intersects":
            return touches
        if self.georel == "disjoint":
            return not touches
        return False  # a point neither equals, contains nor overlaps an area


def parse(
    georel: str | None,
    geometry: str | None,
    coordinates: str | None,
    geoproperty: str | None = None,
) -> GeoQuery | None:
    """The geo-query of these parameters, None when none is given; QueryError when malformed."""
    if georel is None and geometry is None and coordinates is None:
        if geoproperty is not None:
            raise QueryError("geoproperty needs georel, geometry and coordinates")
        return None
    if georel is None or geometry is None or coordinates is None:
        raise QueryError("a geo-query takes all of georel, geometry and coordinates")
    prop = "location" if geoproperty is None else geoproperty
    if not _NAME.match(prop):
        raise QueryError(f"geoproperty {prop!r} is not an attribute name")
    relation, *modifiers = georel.split(";")
    if relation not in GEORELS:
        raise QueryError(f"georel {relation!r} is not one of {', '.join(GEORELS)}")
    if geometry not in GEOMETRIES:
        raise QueryError(f"geometry {geometry!r}: this server takes {', '.join(GEOMETRIES)}")
    distances = _distances(relation, modifiers)
    point, polygons = _coordinates(geometry, coordinates)
    if relation == "near" and point is None:
        raise QueryError("near measures distances from a Point geometry")
    return GeoQuery(
        relation,
        geometry,
        point,
        polygons,
        prop,
        max_distance=distances.get("maxDistance"),
        min_distance=distances.get("minDistance"),
    )


def _distances(relation: str, modifiers: Sequence[str]) -> dict[str, float]:
    if relation != "near":
        if modifiers:
            raise QueryError(f"georel {relation} takes no modifier, got {';'.join(modifiers)!r}")
        return {}
    if not modifiers:
        raise QueryError("near needs maxDistance==<metres> or minDistance==<metres>")
    found: dict[str, float] = {}
    for modifier in modifiers:
        match = _DISTANCE.match(modifier)
        if match is None:
            raise QueryError(f"{modifier!r} is not maxDistance==<metres> or minDistance==<metres>")
        name, text = match.groups()
        try:
            metres = float(text)
        except ValueError:
            raise QueryError(f"{name} must be a number of metres, not {text!r}") from None
        if not math.isfinite(metres) or metres < 0:
            raise QueryError(f"{name} must be a finite number of metres, at least 0")
        if name in found:
            raise QueryError(f"{name} is given twice")
        found[name] = metres
    return found


def _coordinates(geometry: str, text: str) -> tuple[Position | None, tuple[Polygon, ...]]:
    if len(text) > MAX_COORDINATES_CHARS:
        raise QueryError(f"coordinates are longer than {MAX_COORDINATES_CHARS} characters")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # [[[[... nested past the decoder's depth
        raise QueryError(f"coordinates are not a JSON array: {text[:80]!r}") from None
    if geometry == "Point":
        return _position(value), ()
    if geometry == "Polygon":
        return None, (_polygon(value),)
    if not isinstance(value, list) or not value:
        raise QueryError("MultiPolygon coordinates are a non-empty array of polygons")
    return None, tuple(_polygon(p) for p in value)


def _position(value: Any) -> Position:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise QueryError(f"a position is [longitude, latitude], not {json.dumps(value)[:80]}")
    lon, lat = float(value[0]), float(value[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise QueryError(f"[{lon}, {lat}] is not a longitude and latitude in degrees")
    return lon, lat


def _polygon(value: Any) -> Polygon:
    if not isinstance(value, list) or not value:
        raise QueryError("Polygon coordinates are a non-empty array of linear rings")
    rings = []
    for ring in value:
        if not isinstance(ring, list) or len(ring) < 4:
            raise QueryError("a linear ring has at least four positions")
        positions = tuple(_position(p) for p in ring)
        if positions[0] != positions[-1]:
            raise QueryError("a linear ring ends where it starts")
        rings.append(positions)
    return tuple(rings)


def _entity_point(geometry: Any) -> Position | None:
    if not isinstance(geometry, dict) or geometry.get("type") != "Point":
        return None
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, (list, tuple)) or len(coordinates) < 2:
        return None
    return float(coordinates[0]), float(coordinates[1])


def _same(a: Position, b: Position) -> bool:
    return abs(a[0] - b[0]) <= _SAME and abs(a[1] - b[1]) <= _SAME


def haversine_m(a: Position, b: Position) -> float:
    """Great-circle distance in metres between two ``(longitude, latitude)`` positions."""
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def locate(position: Position, polygon: Polygon) -> int:
    """1 inside ``polygon`` (its first ring, minus the others: holes), 0 on a boundary, -1
    outside."""
    exterior, *holes = polygon
    place = _ring(position, exterior)
    if place <= 0:
        return place
    for hole in holes:
        inner = _ring(position, hole)
        if inner >= 0:
            return 0 if inner == 0 else -1
    return 1


def _ring(position: Position, ring: Ring) -> int:
    """1 inside the closed ring, 0 on it, -1 outside (even-odd ray casting)."""
    x, y = position
    inside = False
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        if _on_segment(position, (x1, y1), (x2, y2)):
            return 0
        # The edge crosses the horizontal ray to the right of the point (half-open in y, so a
        # vertex on the ray is counted once).
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return 1 if inside else -1


def _on_segment(point: Position, a: Position, b: Position) -> bool:
    (x, y), (x1, y1), (x2, y2) = point, a, b
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    if abs(cross) > _SAME * max(1.0, abs(x2 - x1) + abs(y2 - y1)):
        return False
    return min(x1, x2) - _SAME <= x <= max(x1, x2) + _SAME and (
        min(y1, y2) - _SAME <= y <= max(y1, y2) + _SAME
    )
