"""The nearest EVSEs on PostgreSQL: a GiST index on each EVSE's point on the unit sphere, searched nearest
first (KNN).

An EVSE's (latitude, longitude) is stored as the 3-D point (x, y, z) on the unit sphere, a `cube` (PostgreSQL's
`cube` extension, shipped with PostgreSQL itself and a trusted extension since PostgreSQL 13: a database owner
may create it). The straight-line (chord) distance between two such points grows strictly with the distance
along the earth's surface, so ordering by the index's `<->` distance is ordering by true distance, exactly, at
any latitude and across the antimeridian; a radius is a chord length. The index's expression uses only
immutable built-ins, so no function body depends on the search_path (earthdistance's `ll_to_earth` does).

Why not the (latitude, longitude) B-tree with a bounding box (what SQLite uses, and what this replaced on
PostgreSQL): in a dense city the box holds thousands of EVSEs, all read and ranked before the first 20 come
out; the KNN scan reads the nearest few from the index and stops (docs/benchmarks.md, issue 15).
"""

from __future__ import annotations

import math

from django.db.models import BooleanField, FloatField, QuerySet
from django.db.models.expressions import RawSQL

EARTH_RADIUS_M = 6_371_000.0
INDEX_NAME = "evse_nearest"


def point_sql(table: str = "") -> str:
    """The indexed expression (the migration creates the index on it; a query must use the same one)."""
    prefix = f'"{table}".' if table else ""
    lat, lon = f'radians({prefix}"latitude")', f'radians({prefix}"longitude")'
    return f"cube(ARRAY[cos({lat}) * cos({lon}), cos({lat}) * sin({lon}), sin({lat})])"


def unit_vector(latitude: float, longitude: float) -> list[float]:
    lat, lon = math.radians(latitude), math.radians(longitude)
    return [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]


def cube_text(latitude: float, longitude: float) -> str:
    """unit_vector as the `cube` type's text, for a `%s::cube` parameter: a string is sent as it is, where psycopg
    builds a `float8[]` list element by element (25 µs against 6 µs a search's parameters, timeit). `repr` gives
    each float's shortest exact form, which PostgreSQL reads back to the same double."""
    x, y, z = unit_vector(latitude, longitude)
    return f"({x!r}, {y!r}, {z!r})"


def chord(radius_m: float) -> float:
    """The straight-line distance, on the unit sphere, between two points `radius_m` apart on the surface."""
    return 2 * math.sin(min(math.pi, radius_m / EARTH_RADIUS_M) / 2)


def reach(radius_m: float) -> float:
    """The chord a query searches within for `radius_m`: a hair wider, so float rounding never drops an EVSE
    right on the radius (the caller checks the exact distance)."""
    return chord(radius_m) * (1 + 1e-9) + 1e-12


def nearest_first(evses: QuerySet, latitude: float, longitude: float, radius_m: float) -> QuerySet:
    """`evses` within `radius_m` of the point (give or take a micrometre: the caller checks the exact distance),
    nearest first (ties by id), as a GiST KNN scan. The cube around the point lets the index stop when it has
    read all that lies within reach (a distance condition alone would have the scan read every row beyond the
    radius when fewer than LIMIT lie within it); the distance condition trims the cube's corners."""
    table = evses.model._meta.db_table
    point = point_sql(table)
    here = unit_vector(latitude, longitude)
    within = reach(radius_m)
    return (
        evses.filter(
            RawSQL(  # noqa: S611 - the expression is ours, the values parameters
                f"{point} <@ cube_enlarge(cube(%s::float8[]), %s, 3) AND {point} <-> cube(%s::float8[]) <= %s",
                (here, within, here, within),
                output_field=BooleanField(),
            )
        )
        .alias(nearness=RawSQL(f"{point} <-> cube(%s::float8[])", (here,), output_field=FloatField()))  # noqa: S611
        .order_by("nearness", "pk")
    )
