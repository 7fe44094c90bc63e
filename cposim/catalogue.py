"""Synthetic catalogue: Indian locations with EVSEs/connectors, the two tariff profiles, and file loading."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .common import ci, iso, loads
from .config import SimConfig

GST = 18.0
BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
MAX_SPAN_MINUTES = 365 * 24 * 60


@dataclass(frozen=True)
class City:
    """A city centre with a few real street names."""

    name: str
    code: str
    state: str
    lat: float
    lon: float
    postal: str
    streets: tuple[str, ...]


CITIES: tuple[City, ...] = (
    City(
        "Bengaluru",
        "BLR",
        "Karnataka",
        12.9716,
        77.5946,
        "5600",
        (
            "MG Road",
            "Brigade Road",
            "100 Feet Road, Indiranagar",
            "80 Feet Road, Koramangala",
            "Outer Ring Road, Bellandur",
            "Residency Road",
        ),
    ),
    City(
        "Delhi",
        "DEL",
        "Delhi",
        28.6139,
        77.2090,
        "1100",
        ("Connaught Place", "Janpath", "Barakhamba Road", "Lodhi Road", "Nehru Place", "Aurobindo Marg"),
    ),
    City(
        "Mumbai",
        "BOM",
        "Maharashtra",
        19.0760,
        72.8777,
        "4000",
        (
            "Marine Drive",
            "Linking Road, Bandra",
            "LBS Marg, Kurla",
            "SV Road, Andheri",
            "Senapati Bapat Marg",
            "Powai Hiranandani Gardens",
        ),
    ),
    City(
        "Chennai",
        "MAA",
        "Tamil Nadu",
        13.0827,
        80.2707,
        "6000",
        (
            "Anna Salai",
            "Nungambakkam High Road",
            "Rajiv Gandhi Salai (OMR)",
            "East Coast Road",
            "T Nagar Usman Road",
            "Velachery Main Road",
        ),
    ),
    City(
        "Hyderabad",
        "HYD",
        "Telangana",
        17.3850,
        78.4867,
        "5000",
        (
            "Road No. 1, Banjara Hills",
            "Road No. 36, Jubilee Hills",
            "HITEC City Main Road",
            "Necklace Road",
            "Gachibowli Road",
        ),
    ),
    City(
        "Pune",
        "PNQ",
        "Maharashtra",
        18.5204,
        73.8567,
        "4110",
        ("FC Road", "JM Road", "MG Road, Camp", "Baner Road", "Nagar Road, Viman Nagar"),
    ),
    City(
        "Kolkata",
        "CCU",
        "West Bengal",
        22.5726,
        88.3639,
        "7000",
        ("Park Street", "Camac Street", "EM Bypass", "Salt Lake Sector V", "Rashbehari Avenue"),
    ),
    City(
        "Ahmedabad",
        "AMD",
        "Gujarat",
        23.0225,
        72.5714,
        "3800",
        ("CG Road", "SG Highway", "Ashram Road", "Sindhu Bhavan Road", "Prahlad Nagar Road"),
    ),
    City(
        "Jaipur",
        "JAI",
        "Rajasthan",
        26.9124,
        75.7873,
        "3020",
        ("MI Road", "Tonk Road", "JLN Marg", "Ajmer Road"),
    ),
    City(
        "Kochi",
        "COK",
        "Kerala",
        9.9312,
        76.2673,
        "6820",
        ("MG Road, Ernakulam", "Marine Drive", "Edappally Bypass", "Kakkanad Infopark Road"),
    ),
    City(
        "Lucknow",
        "LKO",
        "Uttar Pradesh",
        26.8467,
        80.9462,
        "2260",
        ("Hazratganj", "Gomti Nagar", "Shaheed Path", "Vibhuti Khand"),
    ),
    City(
        "Chandigarh",
        "IXC",
        "Chandigarh",
        30.7333,
        76.7794,
        "1600",
        ("Madhya Marg", "Dakshin Marg", "Sector 17 Plaza", "Industrial Area Phase 1"),
    ),
)

POI = (
    "Metro Station Parking",
    "Mall",
    "Tech Park",
    "Hotel",
    "Fuel Station",
    "Hospital",
    "Supermarket",
    "Office Complex",
    "Highway Plaza",
    "Residential Society",
)
PARKING = ("PARKING_LOT", "PARKING_GARAGE", "UNDERGROUND_GARAGE", "ON_STREET", "PARKING_LOT")
FACILITIES = ("MALL", "CAFE", "RESTAURANT", "SUPERMARKET", "HOTEL", "WIFI", "METRO_STATION", "PARKING_LOT")

# (kind, standard, format, power_type, volt, amp, watt)
CONNECTOR_KINDS: tuple[tuple[str, str, str, str, int, int, int], ...] = (
    ("AC", "IEC_62196_T2", "SOCKET", "AC_3_PHASE", 400, 32, 22000),
    ("AC", "IEC_62196_T2", "SOCKET", "AC_3_PHASE", 400, 16, 11000),
    ("AC", "IEC_62196_T2", "CABLE", "AC_1_PHASE", 230, 32, 7400),
    ("AC", "IEC_60309_2_single_16", "SOCKET", "AC_1_PHASE", 230, 15, 3300),
    ("DC", "IEC_62196_T2_COMBO", "CABLE", "DC", 920, 150, 60000),
    ("DC", "IEC_62196_T2_COMBO", "CABLE", "DC", 920, 250, 120000),
    ("DC", "CHADEMO", "CABLE", "DC", 500, 100, 50000),
    ("DC", "GBT_DC", "CABLE", "DC", 750, 200, 15000),
)


def _pc(kind: str, price: float, vat: float | None = GST) -> dict[str, Any]:
    comp: dict[str, Any] = {"type": kind, "price": price, "step_size": 1}
    if vat is not None:
        comp["vat"] = vat
    return comp


def _night(start: str, end: str) -> dict[str, Any]:
    return {"start_time": start, "end_time": end}


def tariff_profile(profile: str, cfg: SimConfig) -> list[dict[str, Any]]:
    """The tariff catalogue of profile `a` or `b` (prices excl. VAT, 18 % GST on every component)."""
    cur = cfg.currency
    if profile == "b":
        specs = [
            (
                "B-AC-SAVER",
                "AC",
                [
                    {"price_components": [_pc("FLAT", 10.00)]},
                    {"price_components": [_pc("ENERGY", 20.00)], "restrictions": _night("18:00", "22:00")},
                    {"price_components": [_pc("ENERGY", 15.00)]},
                    {"price_components": [_pc("PARKING_TIME", 40.00)]},
                ],
                f"{cur} 10 per session + 15/kWh (20/kWh 18:00-22:00) + 40/h idle parking, excl. 18% GST",
            ),
            (
                "B-DC-ULTRA",
                "DC",
                [
                    {"price_components": [_pc("FLAT", 49.00)]},
                    {"price_components": [_pc("ENERGY", 19.00)], "restrictions": _night("23:00", "07:00")},
                    {"price_components": [_pc("ENERGY", 24.00)]},
                    {"price_components": [_pc("TIME", 90.00)]},
                    {"price_components": [_pc("PARKING_TIME", 150.00)]},
                ],
                f"{cur} 49/session + 24/kWh (19/kWh 23:00-07:00) + 90/h charging + 150/h idle, excl. 18% GST",
            ),
        ]
    else:
        specs = [
            (
                "A-AC-STD",
                "AC",
                [
                    {"price_components": [_pc("FLAT", 20.00)]},
                    {"price_components": [_pc("ENERGY", 14.00)], "restrictions": _night("22:00", "06:00")},
                    {"price_components": [_pc("ENERGY", 18.00)]},
                    {"price_components": [_pc("PARKING_TIME", 60.00)]},
                ],
                f"{cur} 20 per session + 18/kWh (14/kWh 22:00-06:00) + 60/h idle parking, excl. 18% GST",
            ),
            (
                "A-DC-FAST",
                "DC",
                [
                    {"price_components": [_pc("FLAT", 30.00)]},
                    {"price_components": [_pc("ENERGY", 16.00)], "restrictions": _night("22:00", "06:00")},
                    {"price_components": [_pc("ENERGY", 22.00)]},
                    {"price_components": [_pc("TIME", 60.00)]},
                    {"price_components": [_pc("PARKING_TIME", 120.00)]},
                ],
                f"{cur} 30/session + 22/kWh (16/kWh 22:00-06:00) + 60/h charging + 120/h idle, excl. 18% GST",
            ),
        ]
    tariffs = []
    for n, (tid, _kind, elements, text) in enumerate(specs):
        tariffs.append(
            {
                "country_code": cfg.country_code,
                "party_id": cfg.party_id,
                "id": tid,
                "currency": cur,
                "tariff_alt_text": [{"language": "en", "text": text}],
                "elements": elements,
                "last_updated": iso(BASE_TIME + timedelta(minutes=n)),
            }
        )
    return tariffs


def tariff_for_power(tariffs: list[dict[str, Any]], power_type: str) -> str:
    """Id of the profile tariff that applies to a connector of this power type."""
    want = "-DC-" if power_type == "DC" else "-AC-"
    for t in tariffs:
        if want in t["id"]:
            return t["id"]
    return tariffs[0]["id"]


def resolve_cities(names: list[str]) -> list[City]:
    """Built-in cities by name (case-insensitive) or custom `Name:lat:lon` entries; default all."""
    if not names:
        return list(CITIES)
    by_name = {c.name.lower(): c for c in CITIES}
    by_name.update({"bangalore": CITIES[0], "new delhi": CITIES[1], "bombay": CITIES[2], "madras": CITIES[3]})
    out = []
    for raw in names:
        if ":" in raw:
            name, lat, lon = [*raw.split(":"), "", ""][:3]
            code = "".join(ch for ch in name.upper() if ch.isalpha())[:3] or "CTY"
            out.append(
                City(
                    name.strip(),
                    code,
                    "",
                    float(lat),
                    float(lon),
                    "1100",
                    ("Main Road", "Station Road", "Ring Road"),
                )
            )
        elif raw.lower() in by_name:
            out.append(by_name[raw.lower()])
        else:
            raise ValueError(f"unknown city {raw!r}; use one of {', '.join(c.name for c in CITIES)} or Name:lat:lon")
    return out


def _capabilities(index: int, kind: str) -> list[str]:
    caps = ["RFID_READER", "REMOTE_START_STOP_CAPABLE", "UNLOCK_CAPABLE"]
    if index % 4 != 3:  # every fourth EVSE cannot be reserved
        caps.insert(1, "RESERVABLE")
    if kind == "DC":
        caps.append("CREDIT_CARD_PAYABLE")
    return sorted(caps)


def synthetic_locations(cfg: SimConfig, tariffs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`cfg.locations` deterministic locations spread over the chosen cities."""
    rng = random.Random(f"{cfg.seed}:{cfg.country_code}:{cfg.party_id}")
    cities = resolve_cities(cfg.cities)
    locations = []
    evse_counter = 0
    minutes = 0
    # Steps of 7-97 minutes (52 on average) from BASE_TIME; a large catalogue is squeezed into a year, so no
    # location is stamped in the future (an eMSP rightly refuses those: 100k steps would reach 2034).
    scale = min(1.0, MAX_SPAN_MINUTES / (52 * cfg.locations)) if cfg.locations else 1.0
    for i in range(cfg.locations):
        city = cities[i % len(cities)]
        street = rng.choice(city.streets)
        poi = rng.choice(POI)
        loc_id = f"LOC-{city.code}-{i + 1:04d}"
        minutes += rng.randint(7, 97)
        updated = iso(BASE_TIME + timedelta(minutes=minutes * scale, seconds=rng.randint(0, 59)))
        evses = []
        for e in range(rng.randint(1, 4)):
            kind_row = rng.choice(CONNECTOR_KINDS)
            kind, standard, fmt, power_type, volt, amp, watt = kind_row
            connectors = [
                {
                    "id": "1",
                    "standard": standard,
                    "format": fmt,
                    "power_type": power_type,
                    "max_voltage": volt,
                    "max_amperage": amp,
                    "max_electric_power": watt,
                    "tariff_ids": [tariff_for_power(tariffs, power_type)],
                    "last_updated": updated,
                }
            ]
            if standard == "IEC_62196_T2_COMBO" and rng.random() < 0.3:
                connectors.append(
                    {
                        "id": "2",
                        "standard": "CHADEMO",
                        "format": "CABLE",
                        "power_type": "DC",
                        "max_voltage": 500,
                        "max_amperage": 100,
                        "max_electric_power": 50000,
                        "tariff_ids": [tariff_for_power(tariffs, "DC")],
                        "last_updated": updated,
                    }
                )
            roll = rng.random()
            status = "AVAILABLE" if roll < 0.86 else ("OUTOFORDER" if roll < 0.93 else "INOPERATIVE")
            evses.append(
                {
                    "uid": f"{loc_id}-E{e + 1}",
                    "evse_id": f"{cfg.country_code}*{cfg.party_id}*E{i + 1:04d}{e + 1:02d}",
                    "status": status,
                    "capabilities": _capabilities(evse_counter, kind),
                    "connectors": connectors,
                    "physical_reference": str(e + 1),
                    "floor_level": "0" if rng.random() < 0.7 else "-1",
                    "last_updated": updated,
                }
            )
            evse_counter += 1
        lat = city.lat + rng.uniform(-0.035, 0.035)
        lon = city.lon + rng.uniform(-0.035, 0.035)
        locations.append(
            {
                "country_code": cfg.country_code,
                "party_id": cfg.party_id,
                "id": loc_id,
                "publish": True,
                "name": f"{cfg.name} - {poi}, {street}",
                "address": f"{rng.randint(1, 250)}, {street}",
                "city": city.name,
                "postal_code": f"{city.postal}{rng.randint(1, 99):02d}",
                **({"state": city.state} if city.state else {}),
                "country": "IND" if cfg.country_code == "IN" else cfg.country_code,
                "coordinates": {"latitude": f"{lat:.6f}", "longitude": f"{lon:.6f}"},
                "parking_type": rng.choice(PARKING),
                "evses": evses,
                "operator": {"name": cfg.name},
                "facilities": sorted(set(rng.sample(FACILITIES, 2))),
                "time_zone": "Asia/Kolkata",
                "opening_times": {"twentyfourseven": True},
                "charging_when_closed": True,
                "last_updated": updated,
            }
        )
    return locations


def load_locations_file(path: str, cfg: SimConfig, tariffs: list[dict[str, Any]]) -> tuple[list, list]:
    """Load Locations (and optional Tariffs) from an OCPI file: an envelope, a list, or {locations, tariffs}.

    Objects are re-stamped with our country_code/party_id; connectors without tariff_ids get a profile
    tariff, EVSEs without capabilities get the default set, and UNKNOWN statuses become AVAILABLE.
    """
    raw = loads(Path(path).read_bytes())
    file_tariffs: list[dict[str, Any]] = []
    if isinstance(raw, dict) and "data" in raw:
        raw = raw["data"]
    if isinstance(raw, dict) and "locations" in raw:
        file_tariffs = list(raw.get("tariffs") or [])
        raw = raw["locations"]
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected an OCPI envelope, a list of Locations or {{locations: [...]}}")
    all_tariffs = list(tariffs)
    for t in file_tariffs:
        t = dict(t, country_code=cfg.country_code, party_id=cfg.party_id)
        t.setdefault("currency", cfg.currency)
        t.setdefault("last_updated", iso(BASE_TIME))
        all_tariffs.append(t)
    locations = []
    counter = 0
    for loc in raw:
        loc = dict(loc, country_code=cfg.country_code, party_id=cfg.party_id)
        loc.setdefault("time_zone", "Asia/Kolkata")
        loc.setdefault("publish", True)
        loc.setdefault("last_updated", iso(BASE_TIME))
        evses = []
        for evse in loc.get("evses") or []:
            evse = dict(evse)
            evse.setdefault("last_updated", loc["last_updated"])
            if str(evse.get("status") or "UNKNOWN").upper() == "UNKNOWN":
                evse["status"] = "AVAILABLE"  # our simulated chargers are online and report their status
            conns = [dict(c) for c in evse.get("connectors") or []]
            kind = "DC" if any(c.get("power_type") == "DC" for c in conns) else "AC"
            if not evse.get("capabilities"):
                evse["capabilities"] = _capabilities(counter, kind)
            for c in conns:
                if not c.get("tariff_ids"):
                    c["tariff_ids"] = [tariff_for_power(tariffs, c.get("power_type", "AC_1_PHASE"))]
                c.setdefault("last_updated", evse["last_updated"])
            evse["connectors"] = conns
            evses.append(evse)
            counter += 1
        loc["evses"] = evses
        locations.append(loc)
    seen = set()
    unique = []
    for loc in locations:
        if ci(loc["id"]) not in seen:
            seen.add(ci(loc["id"]))
            unique.append(loc)
    return unique, all_tariffs
