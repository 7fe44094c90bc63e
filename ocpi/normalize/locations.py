"""Lenient-in/strict-out normalisation of OCPI 2.2.1 Locations and Location PATCHes (mod_locations §8.3.1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from emsp.time_zones import iana_zone
from ocpi import enums
from ocpi.normalize.countries import country_alpha2, country_alpha3, read_party
from ocpi.normalize.datetimes import Unstamped, read_datetime, read_last_updated
from ocpi.normalize.evses import read_connector, read_evse
from ocpi.normalize.issues import Ctx, Issue, Rejected, collect
from ocpi.normalize.parts import (
    at_sea,
    business_details,
    energy_mix,
    geo,
    images,
    opening_times,
    publish_tokens,
    related_locations,
    same_clock,
    zone_from_coordinates,
)
from ocpi.normalize.values import (
    PLACE_ID_MAX,
    canonical_fields,
    field_set,
    read_boolean,
    read_display_texts,
    read_enum,
    read_enum_list,
    read_identifier,
    read_text,
)

LOCATION_FIELDS = field_set(
    "country_code party_id id publish publish_allowed_to name address city postal_code state"
    " country coordinates related_locations parking_type evses directions operator suboperator"
    " owner facilities time_zone opening_times charging_when_closed images energy_mix last_updated"
)
# OCPI 2.1.1 "type" (LocationType) is 2.2.1 "parking_type"; EV24 writes "subOperator".
LOCATION_ALIASES = {"type": "parking_type", "subOperator": "suboperator"}

# String lengths from [bf] mod_locations (address 45->255 and state 20->45 are post-d2 errata).
_MAX_LEN = {"name": 255, "address": 255, "city": 45, "postal_code": 10, "state": 45}

LEVELS = ("location", "evse", "connector")


# --- Location ----------------------------------------------------------------------------------------------


def _country(raw: dict[str, Any], out: dict[str, Any], ctx: Ctx, cc: str | None, *, partial: bool) -> None:
    value = raw.get("country")
    if isinstance(value, str) and value.strip():
        a3, code = country_alpha3(value)
        if a3 is not None:
            if code:
                ctx.fix("country", code, f"country {value!r} normalised to {a3!r}")
            out["country"] = a3
            return
    if partial:
        if value is not None:
            ctx.drop("country", "invalid_country", f"country {value!r} dropped")
        return
    # Fall back to the CPO's own country_code (Evio sends no country): a guess, so it is reported.
    for source in (out.get("country_code"), cc):
        if source and (a2 := country_alpha2(source)):
            a3, _ = country_alpha3(a2)
            ctx.fix("country", "country_from_country_code", f"country {value!r} unusable; {a3} from {a2}")
            out["country"] = a3
            return
    raise ctx.reject("country", f"country {value!r} is not an ISO 3166 country", "invalid_country")


def _at_sea(out: dict[str, Any], ctx: Ctx, latlon: tuple[float, float] | None, *, partial: bool) -> str | None:
    """The zone at the location's coordinates; coordinates in open sea (ITC's 0,-1 for an unknown Russian site)
    reject a whole location (its position is all a search has of it) and are dropped from a PATCH."""
    here = zone_from_coordinates(*latlon) if latlon else None
    if not at_sea(here):
        return here
    coords = out.pop("coordinates")
    reason = f"coordinates {coords['latitude']}, {coords['longitude']} are in open sea ({here})"
    if not partial:
        raise ctx.reject("coordinates", reason, "coordinates_at_sea")
    ctx.drop("coordinates", "coordinates_at_sea", f"{reason}; dropped")
    return None


def _time_zone(raw: dict[str, Any], out: dict[str, Any], ctx: Ctx, here: str | None, *, partial: bool) -> None:
    """time_zone as sent, if it is an IANA zone whose clock is the one at the coordinates (``here``); else the zone
    there. A CPO's default zone for all its sites (Europe/Moscow in Yekaterinburg), a POSIX-signed "Etc/GMT+5"
    (UTC-5) for UTC+5 or another country's zone would show the site's hours and price its tariff windows hours
    off. A name with the same clock is kept (no churn between synonyms)."""
    value = raw.get("time_zone")
    if isinstance(value, str) and value.strip():
        zone = iana_zone(value)
        if zone is not None:
            if here is not None and not same_clock(zone, here):
                message = f"time_zone {value!r} is not the clock at the coordinates; {here} used"
                ctx.fix("time_zone", "time_zone_elsewhere", message)
                zone = here
            elif zone != value:
                ctx.fix("time_zone", "time_zone_format", f"time_zone {value!r} normalised to {zone!r}")
            out["time_zone"] = zone
            return
    if partial and value is None:
        return
    code = "missing_time_zone" if value in (None, "") else "invalid_time_zone"
    zone = here
    if zone is None:
        if partial:
            ctx.drop("time_zone", code, f"time_zone {value!r} dropped")
            return
        raise ctx.reject("time_zone", f"time_zone {value!r} unusable and not derivable", code)
    ctx.fix("time_zone", code, f"time_zone {value!r} unusable; {zone} derived from the coordinates")
    out["time_zone"] = zone


def _location(
    raw: dict[str, Any],
    ctx: Ctx,
    cc: str | None,
    pid: str | None,
    *,
    partial: bool,
    stamped: bool = True,
    stored_at: tuple[float, float] | None = None,
) -> dict[str, Any]:
    raw = canonical_fields(raw, LOCATION_FIELDS, "location", "", ctx, LOCATION_ALIASES)
    out: dict[str, Any] = {}
    get = raw.get
    if partial:
        for key in ("country_code", "party_id"):
            if get(key) is not None:
                s = read_text(get(key), key, ctx)
                if s:
                    out[key] = (country_alpha2(s) or s.upper()) if key == "country_code" else s.upper()
    else:
        read_party(raw, out, "", ctx, cc, pid)

    loc_id = read_identifier(get("id"), "id", ctx, PLACE_ID_MAX)
    if loc_id:
        out["id"] = loc_id
    elif not partial:
        raise ctx.reject("id", "location without id", "missing_location_id")

    if not partial or "publish" in raw:
        pub = read_boolean(get("publish"), "publish", ctx)
        if pub is None and not partial:
            # OCPI 2.1.1 has no publish flag: everything a 2.1.1 CPO lists is public.
            pub = True
            ctx.fix("publish", "missing_publish", f"publish {get('publish')!r} unusable; set to true (2.1.1)")
        if pub is not None:
            out["publish"] = pub
    if get("publish_allowed_to"):
        tokens = publish_tokens(get("publish_allowed_to"), "publish_allowed_to", ctx)
        if tokens and out.get("publish") is True:
            # mod_locations: publish_allowed_to "may only be used when the publish field is set to false".
            ctx.drop("publish_allowed_to", "invalid_publish_allowed_to", "ignored because publish is true")
        elif tokens:
            out["publish_allowed_to"] = tokens

    for key in ("name", "address", "city", "postal_code", "state"):
        s = read_text(get(key), key, ctx, _MAX_LEN[key])
        if s is not None:
            out[key] = s
        elif key in ("address", "city") and not partial:
            out[key] = ""
            ctx.fix(key, "missing_required", f"{key} missing; set to an empty string")

    if not partial or "country" in raw:
        _country(raw, out, ctx, cc, partial=partial)

    latlon = None
    if not partial or "coordinates" in raw:
        try:
            out["coordinates"], lat, lon = geo(get("coordinates"), "coordinates", ctx)
            latlon = (lat, lon)
        except Rejected as exc:
            if not partial:
                raise ctx.reject(exc.path, exc.reason, exc.code) from None
            ctx.drop(exc.path, exc.code, exc.reason)
    if get("related_locations"):
        rel = related_locations(get("related_locations"), "related_locations", ctx)
        if rel:
            out["related_locations"] = rel
    if get("parking_type") is not None:
        ptype = read_enum(get("parking_type"), enums.PARKING_TYPE, "parking_type", ctx)
        if ptype is not None:
            out["parking_type"] = ptype
        else:
            ctx.drop("parking_type", "unknown_enum", f"parking_type {get('parking_type')!r} dropped")
    elif partial and "parking_type" in raw:
        # A PATCH to null clears it (transport_and_format: a PATCH names the fields to update), as a 2.1.1 `type`
        # of OTHER or UNKNOWN does (ocpi/versions/v211.py): no ParkingType says either.
        out["parking_type"] = None

    own = None
    if get("last_updated") is not None:
        try:
            own = read_datetime(get("last_updated"), "last_updated", ctx, event=True)
        except Rejected as exc:
            if partial:
                raise ctx.reject("last_updated", exc.reason, exc.code) from None
    newest: datetime | None = None
    if get("evses") is not None:
        raw_evses = get("evses")
        if not isinstance(raw_evses, list):
            ctx.drop("evses", "invalid_type", "evses is not a list")
            raw_evses = []
        evses: dict[str, tuple[str, dict[str, Any]]] = {}
        parent = own[0] if own else None
        for i, re_ in enumerate(raw_evses):
            epath = f"evses[{i}]"
            mark = ctx.mark()
            try:
                evse, evse_lu = read_evse(re_, epath, ctx, parent)
            except Rejected as exc:
                ctx.rollback(mark)
                ctx.drop(epath, "dropped_evse", f"EVSE dropped: {exc.path}: {exc.reason}")
                continue
            key = evse["uid"].upper()
            if key in evses:
                # Toger/Sitronics repeat uids; the upsert key is (party, location, uid) so only one can live.
                earlier = evses.pop(key)[0]
                ctx.drop(earlier, "duplicate_evse_uid", f"duplicate EVSE uid {evse['uid']!r}; last one kept")
            evses[key] = (epath, evse)
            if evse_lu is not None and (newest is None or evse_lu > newest):
                newest = evse_lu
        out["evses"] = [evse for _path, evse in evses.values()]

    coords = out.get("coordinates")
    if coords and coords["latitude"] == coords["longitude"] and out.get("evses"):
        # Voltrelli repeats the latitude as longitude on every Location; its EVSEs carry the real position.
        candidates = (e.get("coordinates") for e in out["evses"])
        better = next((c for c in candidates if c and c != coords), None)
        if better is not None:
            ctx.fix("coordinates", "coordinates_from_evse", f"latitude == longitude; EVSE position used: {better}")
            out["coordinates"] = better
            latlon = (float(better["latitude"]), float(better["longitude"]))

    if get("directions") is not None:
        d = read_display_texts(get("directions"), "directions", ctx)
        if d is not None:
            out["directions"] = d
    for key in ("operator", "suboperator", "owner"):
        if get(key) is not None:
            bd = business_details(get(key), key, ctx)
            if bd is not None:
                out[key] = bd
    if get("facilities") is not None:
        fac = read_enum_list(get("facilities"), enums.FACILITY, "facilities", ctx)
        if fac is not None:
            out["facilities"] = fac
    here = _at_sea(out, ctx, latlon, partial=partial)
    if here is None and latlon is None and stored_at is not None:
        here = zone_from_coordinates(*stored_at)  # a PATCH of the zone alone: the clock where the site stands
    if not partial or "time_zone" in raw:
        _time_zone(raw, out, ctx, here, partial=partial)
    if get("opening_times") is not None:
        hours = opening_times(get("opening_times"), "opening_times", ctx)
        if hours is not None:
            out["opening_times"] = hours
    if get("charging_when_closed") is not None:
        cwc = read_boolean(get("charging_when_closed"), "charging_when_closed", ctx)
        if cwc is not None:
            out["charging_when_closed"] = cwc
    if get("images") is not None:
        imgs = images(get("images"), "images", ctx)
        if imgs is not None:
            out["images"] = imgs
    if get("energy_mix") is not None:
        mix = energy_mix(get("energy_mix"), "energy_mix", ctx)
        if mix is not None:
            out["energy_mix"] = mix

    if own is None and not partial:
        own = read_last_updated(raw, "", ctx, newest, partial=False, clamp_future=True)
    elif own is None and stamped:
        raise ctx.reject("last_updated", "PATCH without last_updated", "missing_last_updated")
    if own is not None:
        out["last_updated"] = own[1]
    return out


# --- public API ---------------------------------------------------------------------------------------------


def normalize_location(
    raw: dict, *, country_code: str | None = None, party_id: str | None = None
) -> tuple[dict, list[Issue]]:
    """A full Location (PUT body or one entry of a GET page) -> (2.2.1-shaped dict, issues); raises Rejected.

    ``country_code``/``party_id`` are the partner's credentials roles, used only when the object lacks them.
    """
    if not isinstance(raw, dict):
        raise Rejected("", "location is not an object", code="invalid_location")
    return collect(lambda ctx: _location(raw, ctx, country_code, party_id, partial=False))


def normalize_location_patch(
    raw: dict, level: str, stored_at: tuple[float, float] | None = None
) -> tuple[dict, list[Issue]]:
    """A PATCH body for a Location/EVSE/Connector: only the fields present are normalised. `stored_at`: the stored
    location's coordinates, against which a location PATCH's `time_zone` without coordinates is read.

    ``last_updated`` is required (mod_locations PATCH; ocpi/ocpi#355): Rejected with path "last_updated",
    which the receiver maps to OCPI 2001; only an ``Unstamped`` body (OCPI 2.1.1) may come without it, and is
    returned without it. Other unusable fields are dropped from the patch with an issue.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    if not isinstance(raw, dict):
        raise Rejected("", "PATCH body is not an object", code="invalid_patch")
    stamped = not isinstance(raw, Unstamped)
    if stamped and raw.get("last_updated") is None and raw.get("lastUpdated") is None:
        raise Rejected("last_updated", "PATCH without last_updated", code="missing_last_updated")

    def patch(ctx: Ctx) -> dict[str, Any]:
        if level == "location":
            return _location(raw, ctx, None, None, partial=True, stamped=stamped, stored_at=stored_at)
        fn = read_evse if level == "evse" else read_connector
        out, _dt = fn(raw, "", ctx, None, partial=True)
        if stamped and "last_updated" not in out:
            raise Rejected("last_updated", "PATCH without a usable last_updated", code="missing_last_updated")
        return out

    return collect(patch)
