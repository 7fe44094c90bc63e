"""Route geometry for searches along a journey (pure Python, no Django): encoded polylines in and out, route
simplification, the corridor of bounding boxes a database query needs, and, for a charger, how far it is off
the route, its detour and where along the route it lies.

Distances are metres on a sphere (haversine for lengths; near a point, an equirectangular projection at that
point's latitude, exact to well under 1 % within the tens of kilometres a detour spans).

Across the antimeridian (±180°), a route is unwrapped: each point's longitude is taken within 180° of the one
before it (179.95 then -179.95 is 179.95 then 180.05: 0.1° east, not 359.9° west), so its geometry is the plane's.
Its boxes are cut back into [-180, 180] for the database (a box over 180 becomes two ranges), and a point is
placed against the route at its longitude and at the same longitude a turn (360°) on either side.

The detour to a charger is road-agnostic: leave the route at its nearest point, drive straight to the
charger and back, so detour = 2 × the distance off the route. Roads make real detours longer; the figure is
for ranking and for the driver's first look, not for navigation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

EARTH_RADIUS_M = 6_371_000.0
M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180.0

# Bounds on what a request may make us decode and walk (hostile input costs a bounded time and memory).
MAX_POLYLINE_CHARS = 100_000
MAX_ROUTE_POINTS = 20_000
MAX_ROUTE_LENGTH_M = 5_000_000.0  # 5,000 km
SIMPLIFY_TOLERANCE_M = 50.0
SIMPLIFY_BUDGET = 400_000  # point visits Douglas-Peucker may make (~0.1 s)

Point = tuple[float, float]  # (latitude, longitude) in degrees


class RouteError(ValueError):
    """The route is not one we can use (garbage, out of range, too long); the message says why."""


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


# --- encoded polylines (Google's algorithm; precision 5, or 6 as OSRM/Valhalla's polyline6) ---------------


def decode_polyline(text: str, *, precision: int = 5, max_chars: int = MAX_POLYLINE_CHARS) -> list[Point]:
    """The points of an encoded polyline. Raises RouteError for anything that is not one: a character outside
    '?'..'~', a value cut off at the end, a value longer than a coordinate can be, an odd number of values,
    coordinates out of range, more than `max_chars` characters or MAX_ROUTE_POINTS points."""
    if not isinstance(text, str):
        raise RouteError("the polyline must be a string")
    if precision not in (5, 6):
        raise RouteError("polyline precision must be 5 or 6")
    text = text.strip()
    if not text:
        raise RouteError("the polyline is empty")
    if len(text) > max_chars:
        raise RouteError(f"the polyline is longer than {max_chars} characters")
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise RouteError("the polyline has a character that is not in an encoded polyline") from None
    # 180 × 10^6, zig-zag encoded, fits in 29 bits: six 5-bit chunks. A seventh is garbage, never a coordinate.
    values: list[int] = []
    append = values.append
    result = shift = 0
    for index, byte in enumerate(data):
        code = byte - 63
        if code < 0 or code > 63:
            raise RouteError(f"the polyline has a character that is not in an encoded polyline at {index}")
        if code & 0x20:
            result |= (code & 0x1F) << shift
            shift += 5
            if shift > 25:
                raise RouteError(f"the polyline has a value too long to be a coordinate at {index}")
        else:
            result |= code << shift
            append(~(result >> 1) if result & 1 else result >> 1)
            result = shift = 0
    if shift:
        raise RouteError("the polyline ends in the middle of a value")
    if len(values) % 2:
        raise RouteError("the polyline has a latitude without its longitude")
    if len(values) > 2 * MAX_ROUTE_POINTS:
        raise RouteError(f"the polyline has more than {MAX_ROUTE_POINTS} points")
    factor = 10.0**precision
    lats = [v / factor for v in itertools.accumulate(values[0::2])]
    lons = [v / factor for v in itertools.accumulate(values[1::2])]
    for i, (lat, lon) in enumerate(zip(lats, lons, strict=True)):
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise RouteError(f"polyline point {i} is out of range ({lat:.5f},{lon:.5f})")
    return list(zip(lats, lons, strict=True))


def encode_polyline(points: Iterable[Point], *, precision: int = 5) -> str:
    factor = 10**precision
    out: list[str] = []
    prev_lat = prev_lon = 0
    for lat, lon in points:
        ilat, ilon = round(lat * factor), round(lon * factor)
        for delta in (ilat - prev_lat, ilon - prev_lon):
            value = ~(delta << 1) if delta < 0 else delta << 1
            while value >= 0x20:
                out.append(chr((0x20 | (value & 0x1F)) + 63))
                value >>= 5
            out.append(chr(value + 63))
        prev_lat, prev_lon = ilat, ilon
    return "".join(out)


# --- simplification and resampling -------------------------------------------------------------------------


def simplify(points: Sequence[Point], tolerance_m: float = SIMPLIFY_TOLERANCE_M) -> list[Point]:
    """Few points that keep the route within about 1.5 × `tolerance_m` of the original: repeated points go, a
    linear strip filter at half the tolerance thins dense input, then Douglas-Peucker (iterative: no
    recursion depth to exhaust). Measured in a plane at the route's mean latitude (a few per cent off over
    hundreds of kilometres north to south: well inside the tolerance's purpose)."""
    deduped: list[Point] = []
    for point in points:
        if not deduped or point != deduped[-1]:
            deduped.append(point)
    if len(deduped) <= 2:
        return deduped
    k = math.cos(math.radians(sum(p[0] for p in deduped) / len(deduped))) * M_PER_DEG_LAT
    deduped = _strip_filter(deduped, k, tolerance_m / 2)
    xs = [p[1] * k for p in deduped]
    ys = [p[0] * M_PER_DEG_LAT for p in deduped]
    keep = [False] * len(deduped)
    keep[0] = keep[-1] = True
    tolerance2 = tolerance_m * tolerance_m
    stack = [(0, len(deduped) - 1)]
    budget = SIMPLIFY_BUDGET  # Douglas-Peucker is quadratic on crafted input: past the budget, keep the rest
    while stack:
        first, last = stack.pop()
        budget -= last - first
        if budget < 0:
            for i in range(first + 1, last):
                keep[i] = True
            continue
        ax, ay = xs[first], ys[first]
        dx, dy = xs[last] - ax, ys[last] - ay
        length2 = dx * dx + dy * dy
        worst, worst_index = -1.0, -1
        for i in range(first + 1, last):
            px, py = xs[i] - ax, ys[i] - ay
            t = 0.0 if length2 == 0 else (px * dx + py * dy) / length2
            t = 0.0 if t < 0 else 1.0 if t > 1 else t
            ex, ey = px - t * dx, py - t * dy
            d2 = ex * ex + ey * ey
            if d2 > worst:
                worst, worst_index = d2, i
        if worst > tolerance2:
            keep[worst_index] = True
            stack.append((first, worst_index))
            stack.append((worst_index, last))
    return [p for p, kept in zip(deduped, keep, strict=True) if kept]


def _strip_filter(points: list[Point], k: float, tolerance_m: float) -> list[Point]:
    """One linear pass before Douglas-Peucker (Reumann-Witkam): drop the points that stay within
    `tolerance_m` of the line through the last kept point and the one after it. A dense polyline (a point
    every few hundred metres) shrinks several times over for the cost of one cross product a point."""
    kept = [points[0]]
    anchor, direction = 0, 1
    tolerance2 = tolerance_m * tolerance_m
    for i in range(2, len(points)):
        ax, ay = points[anchor][1] * k, points[anchor][0] * M_PER_DEG_LAT
        dx, dy = points[direction][1] * k - ax, points[direction][0] * M_PER_DEG_LAT - ay
        px, py = points[i][1] * k - ax, points[i][0] * M_PER_DEG_LAT - ay
        length2 = dx * dx + dy * dy
        cross = dx * py - dy * px
        if length2 == 0 or cross * cross > tolerance2 * length2:
            kept.append(points[i - 1])
            anchor, direction = i - 1, i
    kept.append(points[-1])
    return kept


def densify(points: Sequence[Point], max_step_m: float) -> list[Point]:
    """The same route with extra points so that no segment is longer than `max_step_m` (a straight line from
    one stop to the next becomes many short pieces, each with a tight bounding box)."""
    if not points:
        return []
    out = [points[0]]
    for a, b in itertools.pairwise(points):
        length = haversine_m(a[0], a[1], b[0], b[1])
        steps = max(1, math.ceil(length / max_step_m))
        for s in range(1, steps + 1):
            f = s / steps
            out.append((a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f))
    return out


# --- the route and where a point is relative to it ---------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    off_route_m: float  # straight-line distance to the nearest point of the route
    along_m: float  # route distance from the start to that nearest point

    @property
    def detour_m(self) -> float:
        """The extra distance to charge there: off the route and back (road-agnostic, see the module doc)."""
        return 2.0 * self.off_route_m


@dataclass
class Route:
    """A route as the searches use it: simplified, with cumulative lengths and, once `corridor()` was asked
    for, a grid of its segments for fast nearest-segment look-ups."""

    points: list[Point]
    cumulative_m: list[float] = field(default_factory=list)
    _grid: dict[tuple[int, int], list[int]] = field(default_factory=dict, repr=False)
    _cell_lat: float = 0.0
    _cell_lon: float = 0.0
    _grid_width_m: float = -1.0
    _lon_low: float = 0.0  # the longitudes the grid spans (unwrapped), widened by a cell
    _lon_high: float = 0.0

    @classmethod
    def from_points(cls, points: Sequence[Point], *, tolerance_m: float = SIMPLIFY_TOLERANCE_M) -> Route:
        if len(points) > MAX_ROUTE_POINTS:
            raise RouteError(f"a route has at most {MAX_ROUTE_POINTS} points")
        for lat, lon in points:
            if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
                raise RouteError("a route point is out of range")
        simplified = simplify(unwrap(points), tolerance_m)
        if len(simplified) < 2:
            raise RouteError("a route needs at least two distinct points")
        cumulative = [0.0]
        for a, b in itertools.pairwise(simplified):
            cumulative.append(cumulative[-1] + haversine_m(a[0], a[1], b[0], b[1]))
        if cumulative[-1] > MAX_ROUTE_LENGTH_M:
            raise RouteError(f"the route is longer than {MAX_ROUTE_LENGTH_M / 1000:.0f} km")
        if max(abs(p[0]) for p in simplified) > 85:
            raise RouteError("routes near the poles are not searched")
        return cls(points=simplified, cumulative_m=cumulative)

    @property
    def length_m(self) -> float:
        return self.cumulative_m[-1]

    def boxes(self, width_m: float, piece_m: float | None = None) -> list[tuple[float, float, float, float]]:
        """Bounding boxes (min_lat, max_lat, min_lon, max_lon) that together cover every point within
        `width_m` of the route: the route cut into pieces of about `piece_m` (default: 2 × width, at least
        2 km), each piece's box widened by `width_m`. Consecutive boxes are merged while that adds little
        area, so a straight stretch is one query range, a winding one several tight ones. Longitudes are within
        [-180, 180]: a box across the antimeridian is cut into one range on each side of it."""
        piece_m = piece_m or max(2 * width_m, 2_000.0)
        boxes: list[tuple[float, float, float, float]] = []
        dlat = width_m / M_PER_DEG_LAT
        piece: list[Point] = [self.points[0]]
        walked = 0.0
        for i, (a, b) in enumerate(itertools.pairwise(self.points)):
            length = self.cumulative_m[i + 1] - self.cumulative_m[i]
            steps = max(1, math.ceil(length / piece_m))
            for s in range(1, steps + 1):
                f = s / steps
                piece.append((a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f))
                walked += length / steps
                if walked >= piece_m:
                    boxes.append(_box(piece, dlat, width_m))
                    piece, walked = [piece[-1]], 0.0
        if len(piece) > 1:
            boxes.append(_box(piece, dlat, width_m))
        return [cut for box in _merge_boxes(boxes) for cut in _wrap_box(box)]

    def _index(self, width_m: float) -> None:
        """A grid of the segments: each cell lists the segments that pass within `width_m` of it."""
        if self._grid_width_m == width_m:
            return
        max_abs_lat = min(89.0, max(abs(p[0]) for p in self.points) + width_m / M_PER_DEG_LAT)
        cell_m = max(2 * width_m, 2_000.0)  # a cell holds a few segments; a segment covers a few cells
        k = M_PER_DEG_LAT * max(0.05, math.cos(math.radians(max_abs_lat)))
        cell_lat, cell_lon = cell_m / M_PER_DEG_LAT, cell_m / k
        dlat, dlon = width_m / M_PER_DEG_LAT, width_m / k  # widening, at the route's widest longitude scale
        grid: dict[tuple[int, int], list[int]] = {}
        points, cumulative, floor = self.points, self.cumulative_m, math.floor
        for i in range(len(points) - 1):
            (alat, alon), (blat, blon) = points[i], points[i + 1]
            # A long segment is rasterised piece by piece, so it lists only the cells along it.
            steps = int((cumulative[i + 1] - cumulative[i]) // cell_m) + 1
            for s in range(steps):
                plat, plon = alat + (blat - alat) * s / steps, alon + (blon - alon) * s / steps
                qlat, qlon = alat + (blat - alat) * (s + 1) / steps, alon + (blon - alon) * (s + 1) / steps
                row0, row1 = floor((min(plat, qlat) - dlat) / cell_lat), floor((max(plat, qlat) + dlat) / cell_lat)
                col0, col1 = floor((min(plon, qlon) - dlon) / cell_lon), floor((max(plon, qlon) + dlon) / cell_lon)
                for row in range(row0, row1 + 1):
                    for col in range(col0, col1 + 1):
                        listed = grid.setdefault((row, col), [])
                        if not listed or listed[-1] != i:
                            listed.append(i)
        self._grid, self._cell_lat, self._cell_lon, self._grid_width_m = grid, cell_lat, cell_lon, width_m
        lons = [p[1] for p in points]
        self._lon_low, self._lon_high = min(lons) - dlon - cell_lon, max(lons) + dlon + cell_lon

    def place(self, lat: float, lon: float, within_m: float) -> Placement | None:
        """Where (lat, lon) is relative to the route, or None when it is more than `within_m` off it. The
        route's longitudes are unwrapped: the point is looked up at each of its longitudes (lon + k × 360)
        that the route's grid spans: one, but near or across the antimeridian two (-179.99 is 180.01 too)."""
        self._index(within_m)
        row = math.floor(lat / self._cell_lat)
        # The distance to each segment near the point, in a plane at the point's latitude (inline: this runs
        # for every candidate of a search).
        kx = math.cos(math.radians(lat)) * M_PER_DEG_LAT
        points, cumulative = self.points, self.cumulative_m
        best_d2, best_along = within_m * within_m, -1.0
        low, high = self._lon_low, self._lon_high
        if high - low < 360.0:  # the usual route: one of lon, lon + 360, lon - 360 at most is in its span
            ats: Iterable[float] = (lon if lon >= low else lon + 360.0,) if lon <= high else (lon - 360.0,)
        else:  # a route around a pole, more than a turn of longitude: each turn it spans
            ats = (lon + 360.0 * k for k in range(math.ceil((low - lon) / 360.0), math.floor((high - lon) / 360.0) + 1))
        for at in ats:
            for i in self._grid.get((row, math.floor(at / self._cell_lon)), ()):
                a, b = points[i], points[i + 1]
                ax, ay = (a[1] - at) * kx, (a[0] - lat) * M_PER_DEG_LAT
                dx, dy = (b[1] - a[1]) * kx, (b[0] - a[0]) * M_PER_DEG_LAT
                length2 = dx * dx + dy * dy
                t = 0.0 if length2 == 0 else -(ax * dx + ay * dy) / length2
                t = 0.0 if t < 0 else 1.0 if t > 1 else t
                x, y = ax + t * dx, ay + t * dy
                d2 = x * x + y * y
                if d2 <= best_d2:
                    best_d2, best_along = d2, cumulative[i] + t * (cumulative[i + 1] - cumulative[i])
        if best_along < 0:
            return None
        return Placement(off_route_m=math.sqrt(best_d2), along_m=best_along)


def unwrap(points: Sequence[Point]) -> list[Point]:
    """The points with each longitude within 180° of the one before it (a step across the antimeridian taken
    the short way: 179.95 then -179.95 becomes 179.95 then 180.05). Longitudes may leave [-180, 180] by as
    much as the route goes past it; latitudes are unchanged."""
    out: list[Point] = []
    previous = None
    for lat, lon in points:
        if previous is not None:
            lon += 360.0 * round((previous - lon) / 360.0)
        out.append((lat, lon))
        previous = lon
    return out


def _wrap_box(box: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    """A box of unwrapped longitudes as boxes within [-180, 180]: moved by whole turns until its west edge is
    in [-180, 180), then cut at 180 into the part east of it and the rest, from -180."""
    min_lat, max_lat, west, east = box
    if east - west >= 360.0:
        return [(min_lat, max_lat, -180.0, 180.0)]
    shift = 360.0 * math.floor((west + 180.0) / 360.0)
    west, east = west - shift, east - shift
    if east <= 180.0:
        return [(min_lat, max_lat, west, east)]
    return [(min_lat, max_lat, west, 180.0), (min_lat, max_lat, -180.0, east - 360.0)]


def _box(points: Sequence[Point], dlat: float, width_m: float) -> tuple[float, float, float, float]:
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    min_lat, max_lat = min(lats) - dlat, max(lats) + dlat
    k = math.cos(math.radians(min(89.0, max(abs(min_lat), abs(max_lat)))))
    dlon = width_m / (M_PER_DEG_LAT * max(0.05, k))
    return min_lat, max_lat, min(lons) - dlon, max(lons) + dlon


def _area(box: tuple[float, float, float, float]) -> float:
    return (box[1] - box[0]) * (box[3] - box[2])


def _merge_boxes(boxes: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
    merged: list[tuple[float, float, float, float]] = []
    areas: list[float] = []
    for box in boxes:
        if merged:
            last = merged[-1]
            union = (min(last[0], box[0]), max(last[1], box[1]), min(last[2], box[2]), max(last[3], box[3]))
            if _area(union) <= 1.25 * (areas[-1] + _area(box)):
                merged[-1] = union
                areas[-1] = areas[-1] + _area(box)
                continue
        merged.append(box)
        areas.append(_area(box))
    return merged
