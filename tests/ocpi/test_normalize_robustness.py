"""Whatever a partner sends, the normalisers answer with a JSON-safe dict or ``Rejected``, never a crash."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from ocpi.normalize import (
    ISSUE_CODES,
    Rejected,
    normalize_cdr,
    normalize_connector,
    normalize_evse,
    normalize_location,
    normalize_location_patch,
    normalize_session,
    normalize_session_patch,
    normalize_tariff,
)

CONNECTOR = {
    "id": "1",
    "standard": "IEC_62196_T2",
    "format": "SOCKET",
    "power_type": "AC_3_PHASE",
    "max_voltage": 230,
    "max_amperage": 16,
    "tariff_ids": ["11"],
    "last_updated": "2015-03-16T10:10:02Z",
}
EVSE = {
    "uid": "3256",
    "evse_id": "BE*BEC*E041503001",
    "status": "AVAILABLE",
    "capabilities": ["RESERVABLE"],
    "connectors": [CONNECTOR, {**CONNECTOR, "id": "2"}],
    "coordinates": {"latitude": "51.047599", "longitude": "3.729944"},
    "last_updated": "2015-06-28T08:12:01Z",
}
LOCATION = {
    "country_code": "BE",
    "party_id": "BEC",
    "id": "LOC1",
    "publish": True,
    "address": "F.Rooseveltlaan 3A",
    "city": "Gent",
    "country": "BEL",
    "coordinates": {"latitude": "51.047599", "longitude": "3.729944"},
    "evses": [EVSE],
    "operator": {"name": "BeCharged", "logo": {"url": "https://x/l.png", "category": "OPERATOR", "type": "png"}},
    "opening_times": {
        "twentyfourseven": False,
        "regular_hours": [{"weekday": 1, "period_begin": "08:00", "period_end": "20:00"}],
    },
    "energy_mix": {"is_green_energy": True, "energy_sources": [{"source": "SOLAR", "percentage": 50}]},
    "time_zone": "Europe/Brussels",
    "last_updated": "2015-06-29T20:39:09Z",
}
TARIFF = {
    "country_code": "DE",
    "party_id": "ALL",
    "id": "14",
    "currency": "EUR",
    "min_price": {"excl_vat": 0.5, "incl_vat": 0.55},
    "elements": [
        {
            "price_components": [{"type": "TIME", "price": 2.0, "vat": 20.0, "step_size": 600}],
            "restrictions": {"start_time": "09:00", "day_of_week": ["MONDAY"], "min_kwh": 1.5, "max_duration": 3600},
        }
    ],
    "last_updated": "2015-06-29T20:39:09Z",
}
TOKEN = {"country_code": "NL", "party_id": "TST", "uid": "123abc", "type": "RFID", "contract_id": "NL-TST-C1"}
PERIODS = [{"start_date_time": "2015-06-29T22:39:09Z", "dimensions": [{"type": "ENERGY", "volume": 120}]}]
SESSION = {
    "country_code": "BE",
    "party_id": "BEC",
    "id": "101",
    "start_date_time": "2015-06-29T22:39:09Z",
    "kwh": 41.12,
    "cdr_token": TOKEN,
    "auth_method": "WHITELIST",
    "location_id": "LOC1",
    "evse_uid": "3256",
    "connector_id": "1",
    "currency": "EUR",
    "charging_periods": PERIODS,
    "total_cost": {"excl_vat": 8.5, "incl_vat": 9.35},
    "status": "COMPLETED",
    "last_updated": "2015-06-29T23:50:17Z",
}
CDR = {
    **{k: v for k, v in SESSION.items() if k not in ("kwh", "location_id", "evse_uid", "connector_id", "status")},
    "end_date_time": "2015-06-29T23:37:32Z",
    "cdr_location": {
        "id": "LOC1",
        "address": "F.Rooseveltlaan 3A",
        "city": "Gent",
        "country": "BEL",
        "coordinates": {"latitude": "3.729944", "longitude": "51.047599"},
        "evse_uid": "3256",
        "evse_id": "BE*BEC*E041503003",
        "connector_id": "1",
        "connector_standard": "IEC_62196_T2",
        "connector_format": "SOCKET",
        "connector_power_type": "AC_1_PHASE",
    },
    "tariffs": [TARIFF],
    "total_energy": 15.342,
    "total_time": 1.973,
    "total_time_cost": {"excl_vat": 4.0},
}
JUNK: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    1e308,
    10**20,
    "",
    " ",
    "x" * 300,
    "NaN",
    "1e5",
    [],
    {},
    [None],
    {"a": 1},
    "2025-01-01",
    "\x00",
]

TARGETS: dict[str, tuple[Callable[[Any], tuple[dict, list]], dict[str, Any]]] = {
    "location": (lambda o: normalize_location(o, country_code="BE", party_id="BEC"), LOCATION),
    "evse": (normalize_evse, EVSE),
    "connector": (normalize_connector, CONNECTOR),
    "location_patch": (lambda o: normalize_location_patch(o, "location"), LOCATION),
    "evse_patch": (lambda o: normalize_location_patch(o, "evse"), EVSE),
    "tariff": (normalize_tariff, TARIFF),
    "session": (normalize_session, SESSION),
    "session_patch": (normalize_session_patch, SESSION),
    "cdr": (normalize_cdr, CDR),
}


def _mutate(obj: Any, rng: random.Random) -> None:
    """Replace, delete or re-case one value somewhere in the tree."""
    while True:
        if isinstance(obj, dict) and obj:
            key = rng.choice(sorted(obj))
            roll = rng.random()
            if roll < 0.3 or not isinstance(obj[key], (dict, list)):
                if roll < 0.15:
                    del obj[key]
                elif roll < 0.2:
                    obj[key.upper()] = obj.pop(key)
                else:
                    obj[key] = copy.deepcopy(rng.choice(JUNK))
                return
            obj = obj[key]
        elif isinstance(obj, list) and obj:
            i = rng.randrange(len(obj))
            if rng.random() < 0.3 or not isinstance(obj[i], (dict, list)):
                obj[i] = copy.deepcopy(rng.choice(JUNK))
                return
            obj = obj[i]
        else:
            return


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_it_never_crashes_on_mutated_objects(target: str) -> None:
    fn, sample = TARGETS[target]
    rng = random.Random(target)  # deterministic: a failure reproduces
    for _ in range(600):
        raw = copy.deepcopy(sample)
        for _ in range(rng.randint(1, 4)):
            _mutate(raw, rng)
        try:
            out, issues = fn(raw)
        except Rejected as exc:
            assert isinstance(exc.path, str) and exc.reason
            continue
        orjson.dumps(out)  # strict out: JSON-safe, ints within 64 bits ...
        json.dumps(out, allow_nan=False)  # ... and no NaN/Infinity (orjson would quietly write null)
        unknown_codes = {i.code for i in issues} - ISSUE_CODES.keys()
        assert unknown_codes == set(), "every issue code is documented in ISSUE_CODES"
