"""A party moved from one connection to another (a hub's CPO taken from the hub and connected directly, or
granted to another hub): what we hold of it goes with it. Its locations (EVSEs and connectors with them) and
tariffs become the new holder's when staff grant it (emsp/services/partners.py::party_objects_moved), and any
later write by the holder makes the object its own (catalogue._store_batch, records.tariff_put); so commands and
EVSE reads go to the holder, the old connection's full pull leaves them alone, and its state no longer hides them.
CDRs and sessions stay with the connection that sent them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from beckn.catalogue import LISTED
from billing.models import Cdr, Tariff
from billing.services.records import tariffs_store
from emsp.models import ChargingSession, Command, Evse, Location, Partner, PartnerParty, StaffAction, hash_token
from emsp.services import catalogue, commands
from emsp.services import partners as partner_services
from emsp.services.catalogue import locations_store
from emsp.services.partners import partner_party_grant
from ocpi import credentials
from ocpi.sync import sync_module
from ocpi.transport import forget_cached_tokens
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory, TokenFactory, ocpi_location
from tests.fakes import FakePeer, envelope
from tests.ocpi.test_hubs import HUB, HUB_TOKEN, LOCATIONS, MODULES, from_party

pytestmark = pytest.mark.django_db

TARIFFS = "/ocpi/emsp/2.2.1/tariffs"
CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"  # the endpoints tests.factories.PartnerFactory gives a partner
OLD, NEW = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"


@pytest.fixture
def hub(db: None) -> Partner:
    """The hub NL*HUB with IN*CPA and IN*CPB granted behind it (as tests/ocpi/test_hubs.py's)."""
    partner = PartnerFactory(
        name="Roaming hub",
        country_code="NL",
        party_id="HUB",
        role=Partner.Role.HUB,
        incoming_token_hash=hash_token(HUB_TOKEN),
        endpoints=[{"identifier": m, "role": r, "url": f"{HUB}/{m}"} for m, r in MODULES],
    )
    for party_id in ("CPA", "CPB"):
        partner_party_grant(partner=partner, country_code="IN", party_id=party_id, by="staff")
    return Partner.objects.get(pk=partner.pk)


def tariff(party_id: str, tariff_id: str, last_updated: str = OLD, price: float = 20) -> dict[str, Any]:
    """A spec-valid OCPI 2.2.1 Tariff: one energy price."""
    return {
        "country_code": "IN",
        "party_id": party_id,
        "id": tariff_id,
        "currency": "INR",
        "elements": [{"price_components": [{"type": "ENERGY", "price": price, "step_size": 1}]}],
        "last_updated": last_updated,
    }


def location(party_id: str, location_id: str, last_updated: str = OLD, name: str = "") -> dict[str, Any]:
    body = ocpi_location("IN", party_id, location_id, tariff_ids=[f"T-{party_id[-1]}"], last_updated=last_updated)
    if name:
        body["name"] = name
    return body


def put(client: OcpiTestClient, path: str, body: dict[str, Any], party_id: str | None = None) -> dict[str, Any]:
    headers = from_party("IN", party_id) if party_id else {}
    return client.put(path, body, headers=headers).json()


def hub_pushes_both_parties() -> None:
    """The hub PUTs LOC-A and T-A of IN*CPA, LOC-B and T-B of IN*CPB, routed from each party."""
    client = OcpiTestClient(HUB_TOKEN)
    for party_id in ("CPA", "CPB"):
        letter = party_id[-1]
        body = location(party_id, f"LOC-{letter}")
        assert put(client, f"{LOCATIONS}/IN/{party_id}/LOC-{letter}", body, party_id)["status_code"] == 1000
        body = tariff(party_id, f"T-{letter}")
        assert put(client, f"{TARIFFS}/IN/{party_id}/T-{letter}", body, party_id)["status_code"] == 1000


def staff_remove_the_grant(hub: Partner, party_id: str = "CPB") -> None:
    """What the console's inline does when staff delete the row (PartnerAdmin.save_formset)."""
    PartnerParty.objects.get(partner=hub, country_code="IN", party_id=party_id).delete()


def owners(location_id: str = "LOC-B", tariff_id: str = "T-B") -> tuple[int, int]:
    return (
        Location.objects.get(location_id=location_id).partner_id,
        Tariff.objects.get(tariff_id=tariff_id).partner_id,
    )


def test_a_cpo_taken_from_a_hub_and_connected_directly_holds_its_chargers(
    peer: FakePeer, hub: Partner, client_for: Callable[..., OcpiTestClient]
) -> None:
    hub_pushes_both_parties()
    staff_remove_the_grant(hub)
    direct = client_for("IN", "CPB")
    assert put(direct, f"{LOCATIONS}/IN/CPB/LOC-B", location("CPB", "LOC-B", NEW, "Moved"))["status_code"] == 1000
    assert put(direct, f"{TARIFFS}/IN/CPB/T-B", tariff("CPB", "T-B", NEW, price=25))["status_code"] == 1000

    cpb = direct.partner  # type: ignore[attr-defined]
    assert owners() == (cpb.pk, cpb.pk)
    assert Location.objects.get(location_id="LOC-B").name == "Moved"
    assert owners("LOC-A", "T-A") == (hub.pk, hub.pk)  # the hub's other party stays with it

    # (a) A command goes to the CPO's own connection, and its result from there is taken.
    evse = Evse.objects.filter(location__location_id="LOC-B").order_by("uid").first()
    assert evse is not None
    peer.route("POST", f"{CPO}/commands/START_SESSION", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert command.partner_id == cpb.pk
    assert command.status == Command.Status.ACCEPTED
    assert peer.calls[-1]["url"] == f"{CPO}/commands/START_SESSION"
    result = direct.post(f"/ocpi/emsp/2.2.1/commands/START_SESSION/{command.uid}", {"result": "ACCEPTED"})
    assert result.json()["status_code"] == 1000, result.json()
    assert Command.objects.get(pk=command.pk).status == Command.Status.SUCCEEDED
    # An EVSE read goes there too.
    evse_json = location("CPB", "LOC-B", NEW)["evses"][0]
    peer.route("GET", f"{CPO}/locations/LOC-B/{evse.uid}", (200, envelope(evse_json)))
    assert catalogue.evse_refresh_from_cpo(evse)
    assert peer.calls[-1]["url"] == f"{CPO}/locations/LOC-B/{evse.uid}"

    # (b) The hub's next full pull lists IN*CPA only: it withdraws and deletes nothing of IN*CPB.
    peer.route("GET", f"{HUB}/locations", (200, envelope([location("CPA", "LOC-A")])))
    peer.route("GET", f"{HUB}/tariffs", (200, envelope([tariff("CPA", "T-A")])))
    assert sync_module(hub, "locations", full=True).outcome == "OK"
    assert sync_module(hub, "tariffs", full=True).outcome == "OK"
    assert Location.objects.get(location_id="LOC-B").withdrawn_at is None
    assert Tariff.objects.filter(tariff_id="T-B", partner=cpb).exists()
    assert Location.objects.get(location_id="LOC-A").withdrawn_at is None

    # (c) Unregistering the hub hides its chargers, not the CPO's.
    credentials.unregister(Partner.objects.get(pk=hub.pk))
    listed = Evse.objects.filter(LISTED)
    assert listed.filter(location__location_id="LOC-B").count() == 2
    assert not listed.filter(location__location_id="LOC-A").exists()


def test_granting_the_party_to_another_hub_moves_its_objects_before_any_push(hub: Partner) -> None:
    hub_pushes_both_parties()
    other = PartnerFactory(country_code="DE", party_id="HB2", role=Partner.Role.HUB)
    staff_remove_the_grant(hub)

    partner_party_grant(partner=other, country_code="IN", party_id="CPB", by="staff")

    assert owners() == (other.pk, other.pk)
    assert owners("LOC-A", "T-A") == (hub.pk, hub.pk)
    assert Evse.objects.filter(location__partner=other).count() == 2  # EVSEs (and connectors) hang off the location


def test_a_direct_partner_set_up_for_the_party_takes_its_objects_before_any_push(hub: Partner) -> None:
    hub_pushes_both_parties()
    staff_remove_the_grant(hub)

    direct = PartnerFactory(country_code="IN", party_id="CPB")

    assert owners() == (direct.pk, direct.pk)
    assert owners("LOC-A", "T-A") == (hub.pk, hub.pk)


def test_a_partner_whose_own_party_is_changed_to_the_party_takes_its_objects(hub: Partner) -> None:
    hub_pushes_both_parties()
    staff_remove_the_grant(hub)
    direct = PartnerFactory(country_code="IN", party_id="CPX")

    direct.party_id = "cpb"  # as staff may type it
    direct.save()

    assert owners() == (direct.pk, direct.pk)


@pytest.mark.parametrize(
    ("party_id", "status"), [("CPB", "REQUESTED"), ("CPX", "GRANTED")], ids=["requested-granted", "granted-edited"]
)
def test_staff_granting_the_party_in_the_console_moves_its_objects(
    hub: Partner, admin_client: Any, party_id: str, status: str
) -> None:
    """A requested row set to GRANTED, or a granted row edited to name the party."""
    hub_pushes_both_parties()
    staff_remove_the_grant(hub)
    other = PartnerFactory(country_code="DE", party_id="HB2", role=Partner.Role.HUB)
    requested = PartnerParty.objects.create(partner=other, country_code="IN", party_id=party_id, status=status)
    form = {
        "name": other.name,
        "country_code": other.country_code,
        "party_id": other.party_id,
        "role": other.role,
        "sync_interval_minutes": 60,
        "full_sync_interval_hours": 24,
        "parties-TOTAL_FORMS": 1,
        "parties-INITIAL_FORMS": 1,
        "parties-MIN_NUM_FORMS": 0,
        "parties-MAX_NUM_FORMS": 1000,
        "parties-0-id": requested.pk,
        "parties-0-partner": other.pk,
        "parties-0-country_code": "IN",
        "parties-0-party_id": "CPB",
        "parties-0-status": "GRANTED",
    }

    response = admin_client.post(reverse("admin:emsp_partner_change", args=[other.pk]), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert owners() == (other.pk, other.pk)
    record = StaffAction.objects.get(verb__in=("grant_party", "change_party"))
    assert record.details["moved"] == {"locations": 1, "tariffs": 1}


def test_the_party_is_matched_in_any_case(hub: Partner) -> None:
    """Rows stored with the party in lower case (a writer that did not go through the normaliser) move too."""
    locations_store(hub, [ocpi_location("in", "cpb", "LOC-L")])
    staff_remove_the_grant(hub)

    direct = PartnerFactory(country_code="IN", party_id="CPB")

    assert Location.objects.get(location_id="LOC-L").partner_id == direct.pk


def test_the_old_hub_may_not_write_the_moved_party(hub: Partner, client_for: Callable[..., OcpiTestClient]) -> None:
    hub_pushes_both_parties()
    staff_remove_the_grant(hub)
    cpb = client_for("IN", "CPB").partner  # type: ignore[attr-defined]
    forget_cached_tokens()  # as another process does TOKEN_CACHE_SECONDS later
    client = OcpiTestClient(HUB_TOKEN)

    loc = client.put(
        f"{LOCATIONS}/IN/CPB/LOC-B", location("CPB", "LOC-B", NEW, "Hub's"), headers=from_party("IN", "CPB")
    )
    tar = client.put(f"{TARIFFS}/IN/CPB/T-B", tariff("CPB", "T-B", NEW, price=99), headers=from_party("IN", "CPB"))

    assert (loc.status_code, loc.json()["status_code"], tar.status_code) == (404, 2000, 404)
    assert owners() == (cpb.pk, cpb.pk)
    assert Location.objects.get(location_id="LOC-B").name == "Station LOC-B"
    assert Tariff.objects.get(tariff_id="T-B").data["elements"][0]["price_components"][0]["price"] == 20


@pytest.mark.parametrize("stamp", [NEW, "2025-12-01T00:00:00Z"], ids=["newer", "older"])
def test_a_write_by_the_old_hub_on_parties_it_read_before_the_move_takes_nothing_back(hub: Partner, stamp: str) -> None:
    """The hub's instance read its parties before the move: a pull under way uses it for minutes, an OCPI
    request one cached for seconds (ocpi/transport.py). What it writes does not take the objects back."""
    hub_pushes_both_parties()
    assert hub.owns("IN", "CPB")  # its parties read now, before the move
    staff_remove_the_grant(hub)
    direct = PartnerFactory(country_code="IN", party_id="CPB")

    locations_store(hub, [location("CPB", "LOC-B", stamp, "Hub's")])
    tariffs_store(hub, [tariff("CPB", "T-B", stamp, price=99)])

    assert owners() == (direct.pk, direct.pk)


@pytest.mark.parametrize("stamp", [NEW, "2025-12-01T00:00:00Z"], ids=["newer", "older"])
def test_the_holders_write_makes_an_object_left_under_another_connection_its_own(
    hub: Partner, client_for: Callable[..., OcpiTestClient], monkeypatch: pytest.MonkeyPatch, stamp: str
) -> None:
    """Objects left under the old connection (moved before party_objects_moved existed): the holder's next PUT
    takes them, also one older than what we hold (ignored as data, the owner still changes)."""
    hub_pushes_both_parties()
    staff_remove_the_grant(hub)
    monkeypatch.setattr(partner_services, "party_objects_moved", lambda *a, **k: {"locations": 0, "tariffs": 0})
    direct = client_for("IN", "CPB")
    cpb = direct.partner  # type: ignore[attr-defined]
    assert owners() == (hub.pk, hub.pk)

    assert put(direct, f"{LOCATIONS}/IN/CPB/LOC-B", location("CPB", "LOC-B", stamp, "Direct"))["status_code"] == 1000
    assert put(direct, f"{TARIFFS}/IN/CPB/T-B", tariff("CPB", "T-B", stamp, price=25))["status_code"] == 1000

    assert owners() == (cpb.pk, cpb.pk)
    newer = stamp == NEW
    assert (Location.objects.get(location_id="LOC-B").name == "Direct") is newer
    assert (Tariff.objects.get(tariff_id="T-B").data["elements"][0]["price_components"][0]["price"] == 25) is newer


def test_a_pull_by_the_holder_takes_the_objects_too(
    peer: FakePeer, hub: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_pushes_both_parties()
    staff_remove_the_grant(hub)
    monkeypatch.setattr(partner_services, "party_objects_moved", lambda *a, **k: {"locations": 0, "tariffs": 0})
    direct = PartnerFactory(country_code="IN", party_id="CPB")
    peer.route("GET", f"{CPO}/locations", (200, envelope([location("CPB", "LOC-B", NEW)])))
    peer.route("GET", f"{CPO}/tariffs", (200, envelope([tariff("CPB", "T-B", NEW)])))

    assert sync_module(direct, "locations", full=True).outcome == "OK"
    assert sync_module(direct, "tariffs", full=True).outcome == "OK"

    assert owners() == (direct.pk, direct.pk)


def test_cdrs_and_sessions_stay_with_the_connection_that_sent_them(
    hub: Partner, spec_example: Callable[[str], Any]
) -> None:
    hub_pushes_both_parties()
    client = OcpiTestClient(HUB_TOKEN)
    session = {
        "country_code": "IN",
        "party_id": "CPB",
        "id": "S1",
        "start_date_time": "2026-06-01T10:00:00Z",
        "kwh": 1,
        "cdr_token": {"uid": "T1", "type": "RFID", "contract_id": "C1", "country_code": "IN", "party_id": "EMS"},
        "auth_method": "COMMAND",
        "location_id": "LOC-B",
        "evse_uid": "LOC-B-E1",
        "connector_id": "1",
        "currency": "INR",
        "status": "ACTIVE",
        "last_updated": "2026-06-01T10:00:00Z",
    }
    assert put(client, "/ocpi/emsp/2.2.1/sessions/IN/CPB/S1", session, "CPB")["status_code"] == 1000
    cdr = {**spec_example("cdr_example.json"), "country_code": "IN", "party_id": "CPB"}
    assert client.post("/ocpi/emsp/2.2.1/cdrs", cdr, headers=from_party("IN", "CPB")).json()["status_code"] == 1000
    staff_remove_the_grant(hub)

    direct = PartnerFactory(country_code="IN", party_id="CPB")

    assert owners() == (direct.pk, direct.pk)
    assert ChargingSession.objects.get(session_id="S1").partner_id == hub.pk
    assert Cdr.objects.get().partner_id == hub.pk


def test_a_grant_that_moves_nothing_writes_no_tariff(hub: Partner) -> None:
    """Granting again what a connection holds: no UPDATE of the tariffs (each moves the tariff generation,
    billing/tariff_cache.py, and with it every search's kept tariffs)."""
    hub_pushes_both_parties()

    with CaptureQueriesContext(connection) as queries:
        partner_party_grant(partner=hub, country_code="IN", party_id="CPB", by="staff")

    assert not [q["sql"] for q in queries if q["sql"].startswith('UPDATE "billing_tariff"')]
    assert owners() == (hub.pk, hub.pk)


def test_the_old_hubs_stale_write_changes_nothing_of_the_new_holders(hub: Partner) -> None:
    """The hub's instance read its parties before the move, so its write passes the party check; the database
    says the party is another connection's now: neither its data nor an EVSE it left out is written over the new
    holder's (a renamed station, a tariff at 99 instead of 25, the holder's extra EVSE REMOVED)."""
    hub_pushes_both_parties()
    assert hub.owns("IN", "CPB")
    staff_remove_the_grant(hub)
    direct = PartnerFactory(country_code="IN", party_id="CPB")
    fresh = location("CPB", "LOC-B", "2026-03-01T00:00:00Z", "Direct's")
    fresh["evses"].append({**fresh["evses"][0], "uid": "LOC-B-E9", "evse_id": "IN*CPB*ELOCB9"})
    locations_store(direct, [fresh])
    tariffs_store(direct, [tariff("CPB", "T-B", "2026-03-01T00:00:00Z", price=25)])

    result = locations_store(hub, [location("CPB", "LOC-B", "2026-04-01T00:00:00Z", "Hub's")])
    assert tariffs_store(hub, [tariff("CPB", "T-B", "2026-04-01T00:00:00Z", price=99)]) == 0

    assert result.not_held == 1
    stored = Location.objects.get(location_id="LOC-B")
    assert stored.name == "Direct's"
    assert Evse.objects.get(location=stored, uid="LOC-B-E9").status != Evse.Status.REMOVED
    assert Tariff.objects.get(tariff_id="T-B").data["elements"][0]["price_components"][0]["price"] == 25
    assert owners() == (direct.pk, direct.pk)


def test_the_old_hubs_stale_write_of_a_new_location_is_not_stored_under_it(hub: Partner) -> None:
    hub_pushes_both_parties()
    assert hub.owns("IN", "CPB")
    staff_remove_the_grant(hub)
    PartnerFactory(country_code="IN", party_id="CPB")

    locations_store(hub, [location("CPB", "LOC-B2", NEW)])
    tariffs_store(hub, [tariff("CPB", "T-B2", NEW)])

    assert not Location.objects.filter(location_id="LOC-B2").exists()
    assert not Tariff.objects.filter(tariff_id="T-B2").exists()


def test_an_ordinary_write_asks_nothing_of_the_parties() -> None:
    """The common write, an object already the writer's, costs no query for the party's holder."""
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    locations_store(partner, [location("CPA", "LOC-A")])
    with CaptureQueriesContext(connection) as queries:
        locations_store(partner, [location("CPA", "LOC-A", NEW, "Again")])
    assert not [q for q in queries.captured_queries if "emsp_partnerparty" in q["sql"]]


# A grant committed between a hub's batch's read of its locations and its upsert can't happen since the batch
# locks them before it reads them: tests/ocpi/test_catalogue_stale_writes.py holds the grant's move waiting for
# the batch and then moving the location (test_a_grant_made_while_the_hubs_batch_holds_the_location_...).


def test_a_put_of_a_party_moved_off_the_writer_is_answered_unknown_not_taken(hub: Partner) -> None:
    """Within the seconds its partner is cached with the parties it had, the old hub's PUT passes the party
    check; the database says the party is another connection's, nothing is written, and the answer is the 404
    a fresh read gives (it had been 1000, and counted as the hub's push)."""
    hub_pushes_both_parties()  # the hub's partner, with IN*CPB, now cached (ocpi/transport.py)
    staff_remove_the_grant(hub)
    PartnerFactory(country_code="IN", party_id="CPB")
    pushed_before = Partner.objects.get(pk=hub.pk).last_push_at
    client = OcpiTestClient(HUB_TOKEN)

    loc = client.put(f"{LOCATIONS}/IN/CPB/LOC-B2", location("CPB", "LOC-B2", NEW), headers=from_party("IN", "CPB"))
    tar = client.put(f"{TARIFFS}/IN/CPB/T-B", tariff("CPB", "T-B", NEW, price=99), headers=from_party("IN", "CPB"))

    assert (loc.status_code, loc.json()["status_code"]) == (404, 2000)
    assert (tar.status_code, tar.json()["status_code"]) == (404, 2000)
    assert not Location.objects.filter(location_id="LOC-B2").exists()
    assert Tariff.objects.get(tariff_id="T-B").data["elements"][0]["price_components"][0]["price"] == 20
    assert Partner.objects.get(pk=hub.pk).last_push_at == pushed_before


def test_a_hubs_page_of_new_locations_asks_the_parties_holders_once() -> None:
    """A hub's first pull: every location is new, of many parties; their holders are read in one query a batch
    (one a party had made a pull 2.5 to 4 times slower)."""
    hub = PartnerFactory(country_code="NL", party_id="HUB", role=Partner.Role.HUB)
    parties = [f"C{n:02d}" for n in range(20)]
    for party_id in parties:
        partner_party_grant(partner=hub, country_code="IN", party_id=party_id, by="staff")
    page = [ocpi_location("IN", party_id, f"LOC-{party_id}-{i}") for party_id in parties for i in range(3)]

    with CaptureQueriesContext(connection) as queries:
        result = locations_store(hub, page)

    assert result.created == 60
    assert len([q for q in queries.captured_queries if "emsp_partnerparty" in q["sql"]]) == 1
    with CaptureQueriesContext(connection) as queries:
        assert tariffs_store(hub, [tariff(party_id, f"T-{party_id}") for party_id in parties]) == 20
    assert len([q for q in queries.captured_queries if "emsp_partnerparty" in q["sql"]]) == 1


def test_two_console_rows_of_one_party_in_another_case_are_a_form_error(hub: Partner, admin_client: Any) -> None:
    form = {
        "name": hub.name,
        "country_code": hub.country_code,
        "party_id": hub.party_id,
        "role": hub.role,
        "sync_interval_minutes": 60,
        "full_sync_interval_hours": 24,
        "parties-TOTAL_FORMS": 2,
        "parties-INITIAL_FORMS": 0,
        "parties-MIN_NUM_FORMS": 0,
        "parties-MAX_NUM_FORMS": 1000,
        "parties-0-partner": hub.pk,
        "parties-0-country_code": "IN",
        "parties-0-party_id": "CPX",
        "parties-0-status": "GRANTED",
        "parties-1-partner": hub.pk,
        "parties-1-country_code": "in",
        "parties-1-party_id": "cpx",
        "parties-1-status": "REQUESTED",
    }

    response = admin_client.post(reverse("admin:emsp_partner_change", args=[hub.pk]), form)

    assert response.status_code == 200  # the form again, with the error
    assert not PartnerParty.objects.filter(party_id="CPX").exists()


def test_a_page_of_tariffs_of_more_parties_than_one_statement_holds_is_stored() -> None:
    """SQLite refuses an expression deeper than 1,000: the holders of a hub's 1,100 parties are read a few hundred
    a statement (one statement had failed the whole page)."""
    import itertools
    import string

    hub = PartnerFactory(country_code="NL", party_id="HBX", role=Partner.Role.HUB)
    ids = ["".join(t) for t in itertools.islice(itertools.product(string.ascii_uppercase, repeat=3), 1100)]
    PartnerParty.objects.bulk_create(
        [PartnerParty(partner=hub, country_code="IN", party_id=p, status="GRANTED") for p in ids]
    )
    hub = Partner.objects.get(pk=hub.pk)

    assert tariffs_store(hub, [tariff(p, f"T{p}") for p in ids]) == 1100
