"""A party moved to another connection while its old connection's partner is still cached with it
(ocpi/transport.py: TOKEN_CACHE_SECONDS): the old connection's EVSE and connector PUTs, its PATCHes (the direct EVSE
PATCH of the OCPI lane among them) and its tariff DELETEs pass the party check against the cached parties, and the
writes themselves find nothing of the new holder's (catalogue: `writer`, records.tariff_delete): answered as an
unknown location (404/2003) or, for a tariff, as its PUT is (404/2000), nothing changed. The new holder's writes
go on as before."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import Tariff
from emsp.models import Connector, Evse, Location, Partner, PartnerParty, hash_token
from emsp.services import catalogue
from emsp.services import partners as partner_services
from emsp.services.partners import partner_party_grant
from ocpi import transport
from ocpi.wsgi_lane import OcpiLane
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory, ocpi_location
from tests.wsgi_calls import call_wsgi

pytestmark = pytest.mark.django_db

LOCATIONS = "/ocpi/emsp/2.2.1/locations"
TARIFFS = "/ocpi/emsp/2.2.1/tariffs"
OLD_TOKEN, NEW_TOKEN = "token-of-the-old-hub", "token-of-the-new-hub"
STAMP, LATER = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
ROUTED = {"OCPI-from-country-code": "IN", "OCPI-from-party-id": "CPB"}


def connector(connector_id: str = "1", power: int = 60000) -> dict[str, Any]:
    return {
        "id": connector_id,
        "standard": "IEC_62196_T2_COMBO",
        "format": "CABLE",
        "power_type": "DC",
        "max_voltage": 500,
        "max_amperage": 120,
        "max_electric_power": power,
        "last_updated": LATER,
    }


def evse(uid: str, status: str = "CHARGING") -> dict[str, Any]:
    return {
        "uid": uid,
        "evse_id": "IN*CPB*ELOCB9",
        "status": status,
        "connectors": [connector()],
        "last_updated": LATER,
    }


# Each write as (method, path under IN/CPB, body): what the old hub sends after the move, and the new one too. A
# path "2.1.1:…" is one of the 2.1.1 receiver's.
WRITES: dict[str, tuple[str, str, Any]] = {
    "evse_patch": ("PATCH", "LOC-B/LOC-B-E1", {"status": "CHARGING", "last_updated": LATER}),
    "evse_patch_unstamped": ("PATCH", "2.1.1:LOC-B/LOC-B-E1", {"status": "CHARGING"}),  # OCPI 2.1.1: no stamp
    "evse_patch_listing_connectors": (
        "PATCH",
        "LOC-B/LOC-B-E1",
        {"status": "CHARGING", "connectors": [connector("1", 1000), connector("2")], "last_updated": LATER},
    ),
    "connector_patch": ("PATCH", "LOC-B/LOC-B-E1/1", {"max_electric_power": 1000, "last_updated": LATER}),
    "location_patch": ("PATCH", "LOC-B", {"name": "Written", "last_updated": LATER}),
    "location_patch_listing_evses": (
        "PATCH",
        "LOC-B",
        {"evses": [{"uid": "LOC-B-E1", "status": "CHARGING"}, evse("LOC-B-E9")], "last_updated": LATER},
    ),
    "evse_put": ("PUT", "LOC-B/LOC-B-E1", evse("LOC-B-E1")),
    "evse_put_new": ("PUT", "LOC-B/LOC-B-E9", evse("LOC-B-E9")),
    "connector_put": ("PUT", "LOC-B/LOC-B-E1/1", connector("1", 1000)),
    "connector_put_new": ("PUT", "LOC-B/LOC-B-E1/2", connector("2")),
}
# The same objects named in another case (OCPI ids are case-insensitive).
HOSTILE = {"LOC-B": "loc-b", "LOC-B-E1": "Loc-b-e1", "LOC-B-E9": "loc-B-e9"}


def hostile(path: str) -> str:
    version, _, path = path.rpartition(":")
    return version + ":" * bool(version) + "/".join(HOSTILE.get(part, part) for part in path.split("/"))


@pytest.fixture
def long_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached partner outlives the test (TOKEN_CACHE_SECONDS is 3 s): its writes are made in the window."""
    monkeypatch.setattr(transport, "TOKEN_CACHE_SECONDS", 3600.0)


@pytest.fixture
def moved(long_cache: None) -> tuple[Partner, Partner]:
    """The hub NL*HUB PUT LOC-B (two EVSEs) and T-B of IN*CPB, which filled the cache with its partner and its
    parties; then staff moved IN*CPB to the hub DE*HB2. Returns (old, new)."""
    old = PartnerFactory(
        country_code="NL", party_id="HUB", role=Partner.Role.HUB, incoming_token_hash=hash_token(OLD_TOKEN)
    )
    partner_party_grant(partner=old, country_code="IN", party_id="CPB", by="staff")
    client = OcpiTestClient(OLD_TOKEN)
    put = client.put(f"{LOCATIONS}/IN/CPB/LOC-B", ocpi_location("IN", "CPB", "LOC-B"), headers=ROUTED)
    assert put.json()["status_code"] == 1000
    put = client.put(f"{TARIFFS}/IN/CPB/T-B", tariff(), headers=ROUTED)
    assert put.json()["status_code"] == 1000
    new = PartnerFactory(
        country_code="DE", party_id="HB2", role=Partner.Role.HUB, incoming_token_hash=hash_token(NEW_TOKEN)
    )
    PartnerParty.objects.filter(partner=old, country_code="IN", party_id="CPB").delete()  # the console's remove
    partner_party_grant(partner=new, country_code="IN", party_id="CPB", by="staff")
    assert Location.objects.get(location_id="LOC-B").partner_id == new.pk
    return old, new


def tariff() -> dict[str, Any]:
    return {
        "country_code": "IN",
        "party_id": "CPB",
        "id": "T-B",
        "currency": "INR",
        "elements": [{"price_components": [{"type": "ENERGY", "price": 20, "step_size": 1}]}],
        "last_updated": STAMP,
    }


def still_cached_with_the_party() -> bool:
    """The old hub's partner as its requests are answered: from the cache, with IN*CPB among its parties."""
    hit = transport._token_cache.get(hash_token(OLD_TOKEN))
    return hit is not None and hit[1].owns("IN", "CPB")


def held() -> Any:
    """What we hold of IN*CPB: the location, its EVSEs and connectors, the tariff."""
    location = Location.objects.get(location_id="LOC-B")
    return (
        location.partner_id,
        location.name,
        location.last_updated,
        location.data,
        sorted(Evse.objects.filter(location=location).values_list("uid", "status", "last_updated", "data")),
        sorted(
            Connector.objects.filter(evse__location=location).values_list(
                "evse__uid", "connector_id", "max_electric_power", "last_updated"
            )
        ),
        list(Tariff.objects.filter(tariff_id="T-B").values_list("partner_id", "data")),
    )


def location_path(path: str) -> str:
    version, _, path = path.rpartition(":")
    return f"/ocpi/emsp/{version or '2.2.1'}/locations/IN/CPB/{path}"


def send(token: str, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    client = OcpiTestClient(token)
    if method == "DELETE":
        response = client.client.delete(path, headers={**client.headers, **ROUTED})
    else:
        response = getattr(client, method.lower())(path, body, headers=ROUTED)
    return response.status_code, response.json()


@pytest.fixture
def lane() -> Iterator[OcpiLane]:
    yield OcpiLane(WSGIHandler())


def send_directly(lane: OcpiLane, token: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    """Through the OCPI lane, whose direct route calls the EVSE PATCH view itself (ocpi/wsgi_lane.py)."""
    auth = {"Authorization": "Token " + base64.b64encode(token.encode()).decode()}
    status, _, content = call_wsgi(lane, "PATCH", path, orjson.dumps(body), {**auth, **ROUTED})
    return int(status.split()[0]), orjson.loads(content)


@pytest.mark.parametrize("case", ["as sent", "another case"])
@pytest.mark.parametrize("write", list(WRITES))
def test_the_old_connections_write_within_the_cached_seconds_changes_nothing(
    moved: tuple[Partner, Partner], write: str, case: str
) -> None:
    method, path, body = WRITES[write]
    path = path if case == "as sent" else hostile(path)
    before = held()
    assert still_cached_with_the_party()

    status, answer = send(OLD_TOKEN, method, location_path(path), body)

    assert (status, answer["status_code"]) == (404, 2003), answer
    assert held() == before


@pytest.mark.parametrize("path", ["LOC-B/LOC-B-E1", "loc-b/LOC-B-e1"])
def test_the_old_connections_direct_evse_patch_changes_nothing(
    moved: tuple[Partner, Partner], lane: OcpiLane, path: str
) -> None:
    before = held()
    assert still_cached_with_the_party()

    status, answer = send_directly(
        lane, OLD_TOKEN, f"{LOCATIONS}/IN/CPB/{path}", {"status": "OUTOFORDER", "last_updated": LATER}
    )

    assert (status, answer["status_code"]) == (404, 2003), answer
    assert held() == before


@pytest.mark.parametrize("path", ["T-B", "t-b"])
def test_the_old_connections_tariff_delete_is_answered_as_its_put_and_deletes_nothing(
    moved: tuple[Partner, Partner], path: str
) -> None:
    _, new = moved
    assert still_cached_with_the_party()

    status, answer = send(OLD_TOKEN, "DELETE", f"{TARIFFS}/IN/CPB/{path}")

    assert (status, answer["status_code"]) == (404, 2000), answer
    assert Tariff.objects.get(tariff_id="T-B").partner_id == new.pk


@pytest.mark.parametrize("write", list(WRITES))
def test_the_new_holders_writes_are_taken(moved: tuple[Partner, Partner], write: str) -> None:
    method, path, body = WRITES[write]
    before = held()

    status, answer = send(NEW_TOKEN, method, location_path(hostile(path)), body)

    assert answer["status_code"] == 1000, answer
    assert status in (200, 201)
    assert held() != before


def test_the_new_holders_direct_evse_patch_is_taken_in_one_statement(
    moved: tuple[Partner, Partner], lane: OcpiLane
) -> None:
    """The writer is part of the PATCH's statement: the hot path asks nothing more (no holder of the party)."""
    patch = {"status": "CHARGING", "last_updated": LATER}
    send_directly(lane, NEW_TOKEN, f"{LOCATIONS}/IN/CPB/LOC-B/LOC-B-E2", patch)  # its partner now cached

    with CaptureQueriesContext(connection) as queries:
        status, answer = send_directly(
            lane, NEW_TOKEN, f"{LOCATIONS}/IN/CPB/loc-b/loc-b-e1", {"status": "OUTOFORDER", "last_updated": LATER}
        )

    assert (status, answer["status_code"]) == (200, 1000), answer
    assert Evse.objects.get(uid="LOC-B-E1").status == "OUTOFORDER"
    sql = [q["sql"] for q in queries.captured_queries]
    assert not [q for q in sql if "emsp_partnerparty" in q]
    if connection.vendor == "postgresql":
        assert len([q for q in sql if "emsp_evse" in q]) == 1


def test_the_new_holders_tariff_delete_is_taken(moved: tuple[Partner, Partner]) -> None:
    status, answer = send(NEW_TOKEN, "DELETE", f"{TARIFFS}/in/cpb/t-b")

    assert (status, answer["status_code"]) == (200, 1000), answer
    assert not Tariff.objects.filter(tariff_id="T-B").exists()


@pytest.mark.parametrize("write", ["connector_patch", "location_patch", "evse_put_new", "connector_put_new"])
def test_a_move_committed_after_the_views_check_is_refused_by_the_write_itself(
    moved: tuple[Partner, Partner], monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """Staff's grant commits between the view's look at the location and its write: the write's own statement
    requires the writer's connection, and nothing is written."""
    method, path, body = WRITES[write]
    monkeypatch.setattr(catalogue, "location_held", lambda location, writer: True)
    before = held()

    status, answer = send(OLD_TOKEN, method, location_path(path), body)

    assert (status, answer["status_code"]) == (404, 2003), answer
    assert held() == before


@pytest.mark.parametrize("write", ["evse_patch", "connector_patch", "location_patch", "evse_put", "connector_put"])
def test_the_holders_write_of_a_location_left_under_another_connection_takes_it(
    long_cache: None, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """A location left under its old connection (moved before party_objects_moved existed): the database grants
    its party to the writer, so the write is taken and the location becomes the writer's, as its PUT makes it."""
    old = PartnerFactory(country_code="NL", party_id="HUB", role=Partner.Role.HUB)
    partner_party_grant(partner=old, country_code="IN", party_id="CPB", by="staff")
    catalogue.locations_store(Partner.objects.get(pk=old.pk), [ocpi_location("IN", "CPB", "LOC-B")])
    PartnerParty.objects.filter(partner=old, country_code="IN", party_id="CPB").delete()
    monkeypatch.setattr(partner_services, "party_objects_moved", lambda *a, **k: {"locations": 0, "tariffs": 0})
    new = PartnerFactory(
        country_code="DE", party_id="HB2", role=Partner.Role.HUB, incoming_token_hash=hash_token(NEW_TOKEN)
    )
    partner_party_grant(partner=new, country_code="IN", party_id="CPB", by="staff")
    Tariff.objects.create(
        partner=old, country_code="IN", party_id="CPB", tariff_id="T-B", ocpi_key="IN*CPB*T-B", currency="INR",
        last_updated=STAMP, data=tariff(),
    )  # fmt: skip
    method, path, body = WRITES[write]
    before = held()

    _, answer = send(NEW_TOKEN, method, location_path(path), body)
    deleted = send(NEW_TOKEN, "DELETE", f"{TARIFFS}/IN/CPB/T-B")

    assert answer["status_code"] == 1000, answer
    assert held() != before
    assert Location.objects.get(location_id="LOC-B").partner_id == new.pk
    assert deleted[1]["status_code"] == 1000
    assert not Tariff.objects.filter(tariff_id="T-B").exists()
