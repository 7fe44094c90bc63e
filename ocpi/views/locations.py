"""Locations receiver (mod_locations §"Receiver interface"): GET, PUT and PATCH at location, EVSE and
connector level under /{country_code}/{party_id}/{location_id}[/{evse_uid}[/{connector_id}]]."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.request import Request

from emsp.datetimes import parse_utc
from emsp.models import Connector, Evse, Location, ci_key
from emsp.services import catalogue, freshness
from ocpi import rendering, transport
from ocpi.normalize import (
    Unstamped,
    normalize_connector,
    normalize_evse,
    normalize_location,
    normalize_location_patch,
)
from ocpi.openapi import TOKEN_AUTH, error_response, json_body, patch_ref, ref, response
from ocpi.transport import (
    SERVER_ERROR,
    OcpiError,
    OcpiView,
    body_with_url_id,
    ocpi_response,
    patch_matches_url,
)
from ocpi.versions import v230


class LocationReceiverView(OcpiView):
    module = "locations"
    ocpi_version = "2.2.1"  # served in 2.1.1 and 2.3.0 too (ocpi/versions/wire.py::versioned sets it)

    def _in_221(self) -> bool:
        """Read back in 2.2.1 itself: what our model holds from 2.3.0 (an MCS connector) is left out (the other
        versions' read-backs are mapped by ocpi/versions/wire.py)."""
        return self.ocpi_version == "2.2.1"

    def _objects(
        self,
        country_code: str,
        party_id: str,
        location_id: str,
        evse_uid: str | None,
        connector_id: str | None,
    ) -> tuple[Location | None, Evse | None, Connector | None]:
        self.require_own_party(country_code, party_id)
        location = catalogue.location_get(country_code, party_id, location_id)
        evse = catalogue.evse_get(location, evse_uid) if location is not None and evse_uid else None
        connector = catalogue.connector_get(evse, connector_id) if evse is not None and connector_id else None
        return location, evse, connector

    def get(
        self,
        request: Request,
        country_code: str,
        party_id: str,
        location_id: str,
        evse_uid: str | None = None,
        connector_id: str | None = None,
    ) -> HttpResponse:
        location, evse, connector = self._objects(country_code, party_id, location_id, evse_uid, connector_id)
        if location is None:
            raise OcpiError(transport.UNKNOWN_LOCATION, "Unknown location", 404)
        if connector_id:
            if connector is None:
                raise OcpiError(transport.CLIENT_ERROR, "Unknown connector", 404)
            shown = rendering.connector_as_ocpi(connector)
            if self._in_221() and not v230.connectors_for_221([shown]):
                raise OcpiError(SERVER_ERROR, f"OCPI 2.2.1 has no ConnectorType {shown.get('standard')!r}")
            return ocpi_response(shown)
        if evse_uid:
            if evse is None:
                raise OcpiError(transport.CLIENT_ERROR, "Unknown EVSE", 404)
            shown = rendering.evse_as_ocpi(evse)
            if self._in_221() and shown["connectors"]:
                shown = v230.evse_for_221(shown)
                if not shown["connectors"]:
                    raise OcpiError(SERVER_ERROR, "OCPI 2.2.1 has no ConnectorType for any of the EVSE's connectors")
            if not shown["connectors"]:  # EVSE.connectors is 1..*: we hold none valid of it (lenient in)
                raise OcpiError(transport.CLIENT_ERROR, "EVSE without a valid connector: PUT it again", 404)
            return ocpi_response(shown)
        shown = rendering.location_as_ocpi(location)
        return ocpi_response(v230.location_for_221(shown) if self._in_221() else shown)

    def put(
        self,
        request: Request,
        country_code: str,
        party_id: str,
        location_id: str,
        evse_uid: str | None = None,
        connector_id: str | None = None,
    ) -> HttpResponse:
        body = self.json_object()
        if not evse_uid:
            clean = self.accept_party_object(normalize_location, body, country_code, party_id, location_id)
            result = catalogue.locations_store(self.partner, [clean])
            if result.not_held:
                # Its party was granted to another connection since this partner's parties were read (cached for
                # seconds): nothing was written, and the answer is the one a fresh read gives.
                raise OcpiError(transport.CLIENT_ERROR, "Unknown party for this token", 404)
            return self._taken(http_status=201 if result.created else 200)
        # Only the parent is looked up: the EVSE or connector itself is replaced by the store.
        self.require_own_party(country_code, party_id)
        location = self._held(catalogue.location_get(country_code, party_id, location_id))
        object_id = f"{location_id}/{evse_uid}/{connector_id or ''}".rstrip("/")
        unknown = "Unknown location or EVSE: PUT it first" if connector_id else "Unknown location: PUT it first"
        try:
            if connector_id:
                evse = catalogue.evse_get(location, evse_uid) if location is not None else None
                if evse is None:
                    raise OcpiError(transport.UNKNOWN_LOCATION, unknown, 404)
                clean = self.accept(normalize_connector, body_with_url_id(body, "id", connector_id), object_id)
                _, created, _ = catalogue.connector_put(evse, clean, writer=self.partner)
            else:
                if location is None:
                    raise OcpiError(transport.UNKNOWN_LOCATION, unknown, 404)
                clean = self.accept(normalize_evse, body_with_url_id(body, "uid", evse_uid), object_id)
                _, created, _ = catalogue.evse_put(location, clean, writer=self.partner)
        except catalogue.LocationNotHeld:  # moved to another connection since `_held`
            raise OcpiError(transport.UNKNOWN_LOCATION, unknown, 404) from None
        return self._taken(http_status=201 if created else 200)

    def patch(
        self,
        request: Request,
        country_code: str,
        party_id: str,
        location_id: str,
        evse_uid: str | None = None,
        connector_id: str | None = None,
    ) -> HttpResponse:
        body = self.json_object()
        self.require_own_party(country_code, party_id)
        level = "connector" if connector_id else "evse" if evse_uid else "location"
        # The id as sent (the normaliser drops one it can't read, with a finding); the party only as read below: an
        # alpha-3 `country_code` the PUT takes (and a camelCase `countryCode` "IND") is the URL's "IN".
        if connector_id:
            patch_matches_url(body, id=connector_id)
        elif evse_uid:
            patch_matches_url(body, uid=evse_uid)
        else:
            patch_matches_url(body, id=location_id)
        object_id = f"{location_id}/{evse_uid or ''}/{connector_id or ''}".rstrip("/")
        stored_at = self._stored_at(country_code, party_id, location_id, body) if level == "location" else None
        clean = self.accept(normalize_location_patch, body, object_id, level=level, stored_at=stored_at)
        # Again as read (a camelCase `countryCode` is the normalised `country_code`): location_patch stores the
        # fields over the location's, and a PATCH never moves it to another party.
        if connector_id:
            patch_matches_url(clean, id=connector_id)
        elif evse_uid:
            patch_matches_url(clean, uid=evse_uid)
        else:
            patch_matches_url(clean, id=location_id, country_code=country_code, party_id=party_id)
        children = "evses" if level == "location" else "connectors" if level == "evse" else None
        try:
            if children is not None and children in body:
                self._patch_with_children_at_once(body, clean, level, country_code, party_id, location_id, evse_uid)
                return self._taken()
            self._patch_one(clean, level, country_code, party_id, location_id, evse_uid, connector_id)
        except catalogue.LocationNotHeld:  # moved to another connection since `_held`: nothing was written
            raise OcpiError(transport.UNKNOWN_LOCATION, "Unknown location", 404) from None
        return self._taken()

    def _stored_at(
        self, country_code: str, party_id: str, location_id: str, body: dict[str, Any]
    ) -> tuple[float, float] | None:
        """Where the stored location stands, for a PATCH of its time_zone without coordinates (the zone is read
        against the clock there, as a PUT's is against its own coordinates). One lookup, only for such a PATCH."""
        if "time_zone" not in body or "coordinates" in body:
            return None
        key = ci_key(country_code, party_id, location_id)
        return Location.objects.filter(ocpi_key=key).values_list("latitude", "longitude").first()

    def _patch_one(
        self,
        clean: dict[str, Any],
        level: str,
        country_code: str,
        party_id: str,
        location_id: str,
        evse_uid: str | None,
        connector_id: str | None,
    ) -> None:
        # The hot path of live availability: one statement on PostgreSQL, which finds the EVSE only under a location
        # of this partner's connection (its party may have moved to another since its parties were read).
        at = (country_code, party_id, location_id, evse_uid)
        if level == "evse" and evse_uid and catalogue.evse_patch_at(*at, clean, writer=self.partner) is not None:
            return
        found, evse, connector = self._objects(country_code, party_id, location_id, evse_uid, connector_id)
        location = self._held(found)
        # mod_locations: PATCH of an object we don't have is an error; the CPO then PUTs it.
        if location is None:
            raise OcpiError(transport.UNKNOWN_LOCATION, "Unknown location", 404)
        if level == "connector":
            if evse is None or connector is None:
                raise OcpiError(transport.CLIENT_ERROR, "Unknown connector", 404)
            if catalogue.connector_patch(evse, connector, clean, writer=self.partner) is None:
                raise OcpiError(transport.CLIENT_ERROR, "Unknown connector", 404)  # left out by a PUT meanwhile
        elif level == "evse":
            # Found here but not above: its location has just become this connection's (`_held`: one left under
            # another connection, whose party the database grants to this one).
            if evse is None or catalogue.evse_patch_at(*at, clean, writer=self.partner) is None:
                raise OcpiError(transport.CLIENT_ERROR, "Unknown EVSE", 404)
        else:
            catalogue.location_patch(location, clean, writer=self.partner)

    def _held(self, location: Location | None) -> Location | None:
        """The location where this partner may write it (`catalogue.location_held`); None, answered as a location
        we don't know and nothing written, where its party was granted to another connection since this partner's
        parties were read (cached for seconds, ocpi/transport.py)."""
        return location if location is not None and catalogue.location_held(location, self.partner) else None

    def _taken(self, http_status: int = 200) -> HttpResponse:
        """The 1000 of a PUT or PATCH the store has taken: only then is the CPO a pushing one, whose EVSEs are not
        re-read (emsp/services/freshness.py). A refused one (2001; 404 for another party's object) is no push:
        noted too, each refusal had renewed PUSH_SILENCE, and a 2.3.0 CPO whose status PATCHes all lacked
        last_updated had its booked EVSEs never re-read. The findings of what was taken are recorded here too, as
        only then is there an object they are of."""
        self.record_findings()
        freshness.partner_pushed(self.partner)
        return ocpi_response(http_status=http_status)

    # --- a PATCH that lists children ---------------------------------------------------------------------
    # mod_locations: a PATCH carries the fields to change, the others unchanged. A Location PATCH listing
    # `evses` (a CPO marking an EVSE REMOVED by a PATCH of its location, as the lifecycle section allows) or an
    # EVSE PATCH listing `connectors` changes each child it lists: one we hold is patched with the fields it
    # names, a new one is PUT; children it does not list are unchanged. A child without `last_updated` takes
    # its parent's, or is unstamped as its parent is (OCPI 2.1.1: `Unstamped`).

    @catalogue.retried_on_deadlock
    def _patch_with_children_at_once(self, *args: Any) -> None:
        """The object and the children it lists, or nothing: one transaction, its first write locking the location
        (the catalogue's lock order), run again whole if it is a deadlock's victim all the same. The children's
        findings go with a rollback: none is of an object taken, and a run again notes them again."""
        mark = len(self._findings)
        try:
            with transaction.atomic():
                self._patch_with_children(*args)
        except BaseException:
            self.forget_findings_since(mark)
            raise

    def _patch_with_children(
        self,
        body: dict[str, Any],
        clean: dict[str, Any],
        level: str,
        country_code: str,
        party_id: str,
        location_id: str,
        evse_uid: str | None,
    ) -> None:
        location = self._held(catalogue.location_get(country_code, party_id, location_id))
        if location is None:
            raise OcpiError(transport.UNKNOWN_LOCATION, "Unknown location", 404)
        if level == "location":
            catalogue.location_patch(location, clean, writer=self.partner)
            for raw in _listed(body["evses"], clean.get("last_updated")):
                self._patch_or_put_evse(location, raw, (country_code, party_id, location_id))
            return
        assert evse_uid is not None
        if catalogue.evse_patch_at(country_code, party_id, location_id, evse_uid, clean, writer=self.partner) is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown EVSE", 404)
        evse = catalogue.evse_get(location, evse_uid)
        assert evse is not None
        self._patch_connectors(evse, body["connectors"], clean.get("last_updated"), f"{location_id}/{evse_uid}")

    def _patch_or_put_evse(self, location: Location, raw: dict[str, Any], at: tuple[str, str, str]) -> None:
        uid = raw.get("uid")
        object_id = f"{at[2]}/{uid}"
        evse = catalogue.evse_get(location, uid) if isinstance(uid, str) and uid else None
        if evse is None:
            catalogue.evse_put(location, self.accept(normalize_evse, raw, object_id), writer=self.partner)
            return
        clean = self.accept(normalize_location_patch, raw, object_id, level="evse")
        catalogue.evse_patch_at(*at, evse.uid, clean, writer=self.partner)
        if "connectors" in raw:
            self._patch_connectors(evse, raw["connectors"], clean.get("last_updated"), object_id)

    def _patch_connectors(self, evse: Evse, raw_connectors: Any, last_updated: str | None, evse_object_id: str) -> None:
        evse.refresh_from_db()
        listed_as_of = parse_utc(last_updated) if last_updated else None  # a new connector listed is not stale
        for raw in _listed(raw_connectors, last_updated):
            connector_id = raw.get("id")
            object_id = f"{evse_object_id}/{connector_id}"
            current = catalogue.connector_get(evse, connector_id) if isinstance(connector_id, str) else None
            if current is None:
                connector = self.accept(normalize_connector, raw, object_id)
                catalogue.connector_put(evse, connector, writer=self.partner, listed_as_of=listed_as_of)
            else:
                clean = self.accept(normalize_location_patch, raw, object_id, level="connector")
                catalogue.connector_patch(evse, current, clean, writer=self.partner)


def _listed(children: Any, last_updated: str | None) -> list[dict[str, Any]]:
    """The child objects a PATCH lists (the normaliser has already dropped, with a finding, what is not an
    object), each with its parent's last_updated where it names none; with none of the parent's either (an OCPI
    2.1.1 PATCH without one, `Unstamped`), unstamped as the parent is: applied whatever we hold."""
    if not isinstance(children, list):
        return []
    listed: list[dict[str, Any]] = []
    for raw in children:
        if isinstance(raw, dict):
            named = raw.get("last_updated") is not None or raw.get("lastUpdated") is not None
            if named:
                listed.append(raw)
            else:
                listed.append(Unstamped(raw) if last_updated is None else {**raw, "last_updated": last_updated})
    return listed


def _receiver_schema(level: str, name: str) -> Any:
    return extend_schema_view(
        get=extend_schema(
            operation_id=f"ocpi_{level}_get",
            responses={200: response(ref(name)), 404: error_response(f"Unknown {level}")},
        ),
        put=extend_schema(
            operation_id=f"ocpi_{level}_put",
            request=json_body(ref(name)),
            responses={200: response(description="Replaced"), 201: response(description="Created")},
        ),
        patch=extend_schema(
            operation_id=f"ocpi_{level}_patch",
            request=json_body(patch_ref(name)),
            responses={200: response(), 404: error_response(f"Unknown {level}: PUT it first")},
        ),
    )


# One class per level so each has its own OpenAPI operations; the behaviour is shared.
@_receiver_schema("location", "Location")
@extend_schema(tags=["OCPI"], auth=TOKEN_AUTH)
class LocationView(LocationReceiverView):
    pass


@_receiver_schema("evse", "EVSE")
@extend_schema(tags=["OCPI"], auth=TOKEN_AUTH)
class EvseView(LocationReceiverView):
    pass


@_receiver_schema("connector", "Connector")
@extend_schema(tags=["OCPI"], auth=TOKEN_AUTH)
class ConnectorView(LocationReceiverView):
    pass
