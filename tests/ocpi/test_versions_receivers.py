"""Our receivers in OCPI 2.1.1 and 2.3.0 (/ocpi/emsp/{version}/…): a CPO's objects in its version's shape are
stored as the 2.2.1 ones are, and what we answer is in its version's shape. Literal spec paths; the objects
are the specs' examples (tests/ocpi/spec_examples/), re-addressed to the CPO's party IN*CPA."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from emsp.models import ChargingSession, Command, Evse, Location, Partner, Token
from emsp.services.catalogue import locations_store
from ocpi.models import DataQualityIssue
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory, ocpi_location

pytestmark = pytest.mark.django_db

EXAMPLES = Path(__file__).parent / "spec_examples"
V211: dict[str, Any] = json.loads((EXAMPLES / "ocpi-2.1.1.json").read_text())
V230: dict[str, Any] = json.loads((EXAMPLES / "ocpi-2.3.0.json").read_text())


def example(source: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(source[name]), **changes}


def findings(partner: Partner) -> set[str]:
    return set(DataQualityIssue.objects.filter(partner=partner).values_list("code", flat=True))


# --- locations -----------------------------------------------------------------------------------------------


def test_a_2_1_1_cpo_puts_its_location_example(ocpi: OcpiTestClient, partner: Partner) -> None:
    response = ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", V211["location"])
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    location = Location.objects.get(partner=partner, location_id="LOC1")
    assert (location.data["parking_type"], location.data["publish"]) == ("ON_STREET", True)
    evse = Evse.objects.get(location=location, uid="3256")
    assert evse.connectors.get(connector_id="1").data["tariff_ids"] == ["11"]
    assert not findings(partner) & {"renamed_field", "unknown_field", "missing_country_code", "missing_party_id"}


def test_a_2_1_1_cpo_adds_an_evse_and_patches_without_last_updated(ocpi: OcpiTestClient, partner: Partner) -> None:
    ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", V211["location"])
    put = ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1/3258", {**V211["evse_put"], "uid": "3258"})
    assert put.json()["status_code"] == 1000
    # mod_locations 2.1.1 examples: PATCH {"tariff_id": "15"} and {"status": "CHARGING"}, no last_updated.
    assert (
        ocpi.patch("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1/3258/1", V211["connector_patch"]).json()["status_code"]
        == 1000
    )
    assert (
        ocpi.patch("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1/3258", {"status": "CHARGING"}).json()["status_code"] == 1000
    )
    evse = Evse.objects.get(location__location_id="LOC1", uid="3258")
    assert evse.status == "CHARGING"
    assert evse.connectors.get(connector_id="1").data["tariff_ids"] == ["15"]


def test_a_2_3_0_cpo_puts_its_location_example_with_parking(ocpi: OcpiTestClient, partner: Partner) -> None:
    body = example(V230, "location_example", country_code="IN", party_id="CPA")
    assert ocpi.put("/ocpi/emsp/2.3.0/locations/IN/CPA/LOC1", body).json()["status_code"] == 1000
    location = Location.objects.get(partner=partner, location_id="LOC1")
    assert "parking_places" not in location.data
    assert Evse.objects.filter(location=location).count() == 2
    assert "unknown_field" not in findings(partner)


TS = "2026-08-02T00:00:00Z"


@pytest.mark.parametrize("version", ["2.2.1", "2.3.0"])
def test_an_evse_patch_of_its_capabilities_applies_in_2_3_0_too(
    ocpi: OcpiTestClient, partner: Partner, version: str
) -> None:
    """2.3.0 gives the Connector a `capabilities` of its own, which we leave out; an EVSE's is 2.2.1's and applies
    (it had been stripped at every level: RESERVE_NOW kept going to a charger no longer RESERVABLE)."""
    body = example(V230, "location_example", country_code="IN", party_id="CPA")
    assert ocpi.put("/ocpi/emsp/2.3.0/locations/IN/CPA/LOC1", body).json()["status_code"] == 1000
    uid = body["evses"][0]["uid"]
    capabilities = ["REMOTE_START_STOP_CAPABLE", "START_SESSION_CONNECTOR_REQUIRED"]
    patched = ocpi.patch(
        f"/ocpi/emsp/{version}/locations/IN/CPA/LOC1/{uid}", {"capabilities": capabilities, "last_updated": TS}
    )
    assert patched.json()["status_code"] == 1000
    evse = Evse.objects.get(location__location_id="LOC1", uid=uid)
    assert (evse.is_reservable, evse.needs_connector_id) == (False, True)


def test_a_2_3_0_connector_patched_to_mcs_is_mcs(ocpi: OcpiTestClient, partner: Partner) -> None:
    """It had kept its old standard (offered to drivers as Type 2), the PATCH answered 1000."""
    body = example(V230, "location_example", country_code="IN", party_id="CPA")
    assert ocpi.put("/ocpi/emsp/2.3.0/locations/IN/CPA/LOC1", body).json()["status_code"] == 1000
    evse = body["evses"][0]
    path = f"/ocpi/emsp/2.3.0/locations/IN/CPA/LOC1/{evse['uid']}/{evse['connectors'][0]['id']}"
    patched = ocpi.patch(path, {"standard": "MCS", "capabilities": ["ISO_15118_2_PLUG_AND_CHARGE"], "last_updated": TS})
    assert patched.json()["status_code"] == 1000
    connector = Evse.objects.get(location__location_id="LOC1", uid=evse["uid"]).connectors.get(
        connector_id=evse["connectors"][0]["id"]
    )
    assert connector.data["standard"] == "MCS" and "capabilities" not in connector.data


def test_an_mcs_connector_is_not_read_back_in_a_version_that_lacks_it(ocpi: OcpiTestClient, partner: Partner) -> None:
    """2.2.1 and 2.1.1 have no MCS: our copy read back there leaves it out (an EVSE of it alone is named)."""
    body = example(V230, "location_example", country_code="IN", party_id="CPA")
    body["evses"][0]["connectors"][0]["standard"] = "MCS"
    body["evses"][1]["connectors"] = [{**body["evses"][0]["connectors"][0], "id": "9"}]
    assert ocpi.put("/ocpi/emsp/2.3.0/locations/IN/CPA/LOC1", body).json()["status_code"] == 1000
    mcs_only, mixed = body["evses"][1]["uid"], body["evses"][0]["uid"]

    def standards(version: str) -> list[str]:
        data = ocpi.get(f"/ocpi/emsp/{version}/locations/IN/CPA/LOC1").json()["data"]
        return sorted(c["standard"] for e in data["evses"] for c in e["connectors"])

    assert "MCS" in standards("2.3.0")
    assert "MCS" not in standards("2.2.1") and "MCS" not in standards("2.1.1")
    assert ocpi.get(f"/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/{mcs_only}").json()["status_code"] == 3000
    evse = ocpi.get(f"/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/{mixed}").json()["data"]
    assert evse["connectors"] and "MCS" not in [c["standard"] for c in evse["connectors"]]
    assert ocpi.get(f"/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/{mcs_only}/9").json()["status_code"] == 3000


# --- sessions ------------------------------------------------------------------------------------------------


@pytest.fixture
def bengaluru(partner: Partner) -> Location:
    locations_store(partner, [ocpi_location("IN", "CPA", "LOC1")])
    return Location.objects.get(partner=partner, location_id="LOC1")


def test_a_2_1_1_session_is_linked_to_our_token_and_its_start_command(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    token = TokenFactory(type=Token.Type.APP_USER, contract_id="IN-EMS-C00000042")
    evse = bengaluru.evses.order_by("pk").first()
    assert evse is not None
    command = Command.objects.create(
        partner=partner, type=Command.Type.START_SESSION, token=token, evse=evse, authorization_reference="AUTH-211"
    )
    # Begun as our start was sent (the spec example's 2015 date would be no charge of it).
    session = example(V211, "session_start", auth_id="IN-EMS-C00000042", start_datetime=stamp_211(command.created_at))
    session["location"] = {
        **session["location"],
        "id": "LOC1",
        "evses": [{"uid": evse.uid, "connectors": [{"id": "1"}]}],
    }
    response = ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/101", session)
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    stored = ChargingSession.objects.get(session_id="101")
    assert (stored.token, stored.location, stored.evse) == (token, bengaluru, evse)
    assert stored.authorization_reference == "AUTH-211"
    assert stored.total_cost_excl_vat == Decimal("2.5")
    command.refresh_from_db()
    assert command.session == stored
    # A PATCH without last_updated (2.1.1) moves it on.
    patch = {"status": "ACTIVE", "kwh": 1.5}
    assert ocpi.patch("/ocpi/emsp/2.1.1/sessions/IN/CPA/101", patch).json()["status_code"] == 1000
    stored.refresh_from_db()
    assert (stored.status, stored.kwh) == ("ACTIVE", Decimal("1.5"))


def test_a_2_3_0_session_with_taxes_is_stored_excl_and_incl_vat(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    body = example(V230, "session_example_2_short_finished", country_code="IN", party_id="CPA")
    assert ocpi.put("/ocpi/emsp/2.3.0/sessions/IN/CPA/101", body).json()["status_code"] == 1000
    stored = ChargingSession.objects.get(session_id="101")
    assert (stored.total_cost_excl_vat, stored.total_cost_incl_vat) == (Decimal("8.5"), Decimal("9.35"))


def test_a_2_3_0_cpo_reads_its_session_back_with_a_2_3_0_price(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    body = example(V230, "session_example_2_short_finished", country_code="IN", party_id="CPA")
    ocpi.put("/ocpi/emsp/2.3.0/sessions/IN/CPA/101", body)
    read = ocpi.get("/ocpi/emsp/2.3.0/sessions/IN/CPA/101").json()["data"]
    assert set(read["total_cost"]) <= {"before_taxes", "taxes"}  # 2.3.0's Price, not 2.2.1's excl_vat/incl_vat
    assert Decimal(str(read["total_cost"]["before_taxes"])) == Decimal("8.5")
    taxes = sum(Decimal(str(t["amount"])) for t in read["total_cost"]["taxes"])
    assert taxes == Decimal("0.85")


# --- tokens and commands ---------------------------------------------------------------------------------------


def test_a_2_1_1_cpo_pulls_our_tokens_in_2_1_1(ocpi: OcpiTestClient) -> None:
    TokenFactory(type=Token.Type.APP_USER, contract_id="IN-EMS-C00000042")
    data = ocpi.get("/ocpi/emsp/2.1.1/tokens").json()["data"]
    assert data[0]["auth_id"] == "IN-EMS-C00000042" and data[0]["type"] == "OTHER"
    assert set(data[0]) <= set(V211["token"])  # nothing 2.1.1 doesn't know
    assert "contract_id" in ocpi.get("/ocpi/emsp/2.3.0/tokens").json()["data"][0]


def test_a_2_1_1_cpo_authorizes_our_app_token_as_other(ocpi: OcpiTestClient) -> None:
    token = TokenFactory(type=Token.Type.APP_USER, uid="APP-TOKEN-1")
    response = ocpi.post(f"/ocpi/emsp/2.1.1/tokens/{token.uid}/authorize?type=OTHER", None)
    body = response.json()
    assert (response.status_code, body["status_code"]) == (200, 1000)
    assert body["data"] == {"allowed": "ALLOWED"}  # 2.1.1 AuthorizationInfo: no token, no reference


def test_a_2_1_1_command_response_posted_as_result_fails_an_unknown_session(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    command = Command.objects.create(partner=partner, type=Command.Type.STOP_SESSION, status=Command.Status.ACCEPTED)
    path = f"/ocpi/emsp/2.1.1/commands/STOP_SESSION/{command.uid}"
    assert ocpi.post(path, {"result": "UNKNOWN_SESSION"}).json()["status_code"] == 1000
    command.refresh_from_db()
    assert command.status == Command.Status.FAILED


def test_a_2_1_1_cdr_closes_the_session_it_names_no_id_of(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    from billing.models import Cdr

    TokenFactory(uid="012345678", contract_id="DE8ACC12E46L89")
    evse = bengaluru.evses.order_by("pk").first()
    assert evse is not None
    where = {"id": "LOC1", "evses": [{"uid": evse.uid, "connectors": [{"id": "1"}]}]}
    session = example(V211, "session_finished", id="S-211", start_datetime="2015-06-29T21:39:09Z", location=where)
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S-211", session).json()["status_code"] == 1000
    cdr = example(V211, "cdr")
    cdr["location"] = {**cdr["location"], "id": "LOC1", "country": "IND"}
    cdr["location"]["evses"][0]["uid"] = evse.uid
    response = ocpi.post("/ocpi/emsp/2.1.1/cdrs", cdr)
    assert response.json()["status_code"] == 1000, response.json()
    stored = Cdr.objects.get(cdr_id="12345")
    assert stored.charging_session == ChargingSession.objects.get(session_id="S-211")


def stamp_211(at: Any) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def started_211(partner: Partner, bengaluru: Location, *, minutes_ago: int) -> tuple[Command, Any]:
    """Our START_SESSION to the 2.1.1 CPO for the contract of the spec's CDR, sent `minutes_ago`."""
    from datetime import timedelta

    from django.utils import timezone

    token = TokenFactory(uid="012345678", contract_id="DE8ACC12E46L89")
    evse = bengaluru.evses.order_by("pk").first()
    assert evse is not None
    command = Command.objects.create(
        partner=partner, type=Command.Type.START_SESSION, token=token, evse=evse, authorization_reference="AUTH-211"
    )
    sent = timezone.now() - timedelta(minutes=minutes_ago)
    Command.objects.filter(pk=command.pk).update(created_at=sent)
    return command, sent


def cdr_211(evse_uid: str, started: Any) -> dict[str, Any]:
    from datetime import timedelta

    cdr = example(
        V211, "cdr", start_date_time=stamp_211(started), stop_date_time=stamp_211(started + timedelta(minutes=10))
    )
    cdr["location"] = {**cdr["location"], "id": "LOC1", "country": "IND"}
    cdr["location"]["evses"][0]["uid"] = evse_uid
    cdr["charging_periods"] = [{**p, "start_date_time": stamp_211(started)} for p in cdr["charging_periods"][:1]]
    return cdr


def test_a_2_1_1_cdr_of_our_start_without_a_session_carries_the_starts_reference(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    """A 2.1.1 CPO without the Sessions module: the CDR is the start's (billing then bills its booking: through a
    session made of it); it had been billed to the driver's account, the booking's hold left authorised."""
    from datetime import timedelta

    from billing.models import Cdr

    command, sent = started_211(partner, bengaluru, minutes_ago=90)
    posted = ocpi.post("/ocpi/emsp/2.1.1/cdrs", cdr_211(command.evse.uid, sent + timedelta(minutes=1))).json()
    assert posted["status_code"] == 1000, posted
    assert Cdr.objects.get(cdr_id="12345").data["authorization_reference"] == "AUTH-211"


def test_a_2_1_1_cdr_is_tied_to_the_session_open_when_its_charge_began(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    """The CPO opened the session PENDING at the start command; the driver plugged in 8 minutes later, where the
    CDR begins: it had matched no session (±5 minutes of the session's start only)."""
    from datetime import timedelta

    from billing.models import Cdr

    command, sent = started_211(partner, bengaluru, minutes_ago=120)
    where = {"id": "LOC1", "evses": [{"uid": command.evse.uid, "connectors": [{"id": "1"}]}]}
    session = example(V211, "session_start", id="S-211", auth_id="DE8ACC12E46L89", location=where,
                      start_datetime=stamp_211(sent), last_updated=stamp_211(sent), status="PENDING")  # fmt: skip
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S-211", session).json()["status_code"] == 1000
    assert (
        ocpi.post("/ocpi/emsp/2.1.1/cdrs", cdr_211(command.evse.uid, sent + timedelta(minutes=8))).json()["status_code"]
        == 1000
    )
    stored = Cdr.objects.get(cdr_id="12345")
    assert stored.charging_session == ChargingSession.objects.get(session_id="S-211")
    assert stored.data["authorization_reference"] == "AUTH-211"


def test_a_2_1_1_session_first_seen_hours_after_our_start_is_still_tied_to_it(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    """Pushed only when it ended (or pulled after an outage), three hours on: matched by when it began."""
    from datetime import timedelta

    command, sent = started_211(partner, bengaluru, minutes_ago=180)
    where = {"id": "LOC1", "evses": [{"uid": command.evse.uid, "connectors": [{"id": "1"}]}]}
    session = example(V211, "session_finished", id="S-211", auth_id="DE8ACC12E46L89", location=where,
                      start_datetime=stamp_211(sent + timedelta(minutes=2)),
                      end_datetime=stamp_211(sent + timedelta(minutes=62)))  # fmt: skip
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S-211", session).json()["status_code"] == 1000
    assert ChargingSession.objects.get(session_id="S-211").authorization_reference == "AUTH-211"


def start_at(partner: Partner, evse: Any, reference: str, sent: Any) -> Command:
    token = Token.objects.filter(contract_id="DE8ACC12E46L89").first() or TokenFactory(
        uid="012345678", contract_id="DE8ACC12E46L89"
    )
    command = Command.objects.create(
        partner=partner, type=Command.Type.START_SESSION, token=token, evse=evse, authorization_reference=reference
    )
    Command.objects.filter(pk=command.pk).update(created_at=sent)
    return command


def session_211(session_id: str, evse_uid: str, start: Any, status: str, end: Any = None) -> dict[str, Any]:
    where = {"id": "LOC1", "evses": [{"uid": evse_uid, "connectors": [{"id": "1"}]}]}
    body = example(V211, "session_start", id=session_id, auth_id="DE8ACC12E46L89", location=where,
                   start_datetime=stamp_211(start), last_updated=stamp_211(start), status=status)  # fmt: skip
    if end is not None:
        body.update(end_datetime=stamp_211(end), last_updated=stamp_211(end))
    return body


def posted_cdr(ocpi: OcpiTestClient, cdr_id: str, evse_uid: str, start: Any) -> dict[str, Any]:
    from billing.models import Cdr

    body = {**cdr_211(evse_uid, start), "id": cdr_id}
    assert ocpi.post("/ocpi/emsp/2.1.1/cdrs", body).json()["status_code"] == 1000
    return Cdr.objects.get(cdr_id=cdr_id).data


def test_a_2_1_1_cdr_takes_the_start_sent_before_its_charge_not_a_later_one(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    """No sessions reported; a short charge, then the driver's next booking three minutes on: the first CDR is the
    first start's (it had taken the newest start of the window, the next booking's)."""
    from datetime import timedelta

    from django.utils import timezone

    evse = bengaluru.evses.order_by("pk").first()
    t0 = timezone.now() - timedelta(minutes=30)
    start_at(partner, evse, "REF-1", t0)
    start_at(partner, evse, "REF-2", t0 + timedelta(minutes=3))
    assert posted_cdr(ocpi, "CDR-1", evse.uid, t0 + timedelta(seconds=30))["authorization_reference"] == "REF-1"


def test_a_2_1_1_cdr_is_not_tied_to_an_earlier_invalid_session_of_the_token(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    """The driver's first booking's session went INVALID (no charge, no CDR); an hour on, the next booking's CDR
    comes before its session: it is the second start's, not the INVALID session's (the first booking's)."""
    from datetime import timedelta

    from django.utils import timezone

    evse = bengaluru.evses.order_by("pk").first()
    t0 = timezone.now() - timedelta(minutes=5)
    start_at(partner, evse, "REF-1", t0 - timedelta(minutes=61))
    invalid = session_211("S1", evse.uid, t0 - timedelta(minutes=60), "INVALID")
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S1", invalid).json()["status_code"] == 1000
    start_at(partner, evse, "REF-2", t0 - timedelta(minutes=1))
    cdr = posted_cdr(ocpi, "CDR-2", evse.uid, t0)
    assert (cdr.get("session_id"), cdr["authorization_reference"]) == (None, "REF-2")


def test_another_2_1_1_charge_of_the_contract_does_not_take_a_start_whose_session_has_its_cdr(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    """The start's session has its CDR already: a later charge of the same contract at that EVSE (an RFID card
    sharing it) is no charge of that start (it had been tied to the booking and held as its second bill)."""
    from datetime import timedelta

    from django.utils import timezone

    evse = bengaluru.evses.order_by("pk").first()
    t0 = timezone.now() - timedelta(minutes=90)
    start_at(partner, evse, "REF-1", t0)
    done = session_211("S1", evse.uid, t0 + timedelta(minutes=1), "COMPLETED", t0 + timedelta(minutes=30))
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S1", done).json()["status_code"] == 1000
    assert posted_cdr(ocpi, "CDR-1", evse.uid, t0 + timedelta(minutes=1))["session_id"] == "S1"
    later = posted_cdr(ocpi, "CDR-2", evse.uid, t0 + timedelta(minutes=60))
    assert (later.get("session_id"), later.get("authorization_reference")) == (None, None)


def test_a_2_1_1_session_seen_late_takes_the_start_sent_before_it_began(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    """Seen 150 minutes on, after the driver's next booking's start: it is the first start's (the two bookings'
    charges had been swapped)."""
    from datetime import timedelta

    from django.utils import timezone

    evse = bengaluru.evses.order_by("pk").first()
    t0 = timezone.now() - timedelta(minutes=150)
    start_at(partner, evse, "REF-1", t0)
    start_at(partner, evse, "REF-2", t0 + timedelta(minutes=70))
    done = session_211("S1", evse.uid, t0 + timedelta(minutes=1), "COMPLETED", t0 + timedelta(minutes=60))
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S1", done).json()["status_code"] == 1000
    assert ChargingSession.objects.get(session_id="S1").authorization_reference == "REF-1"


# --- hostile input in the other versions (review of issue 10) ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/ocpi/emsp/2.1.1/sessions/IN/CPA/H1", {**V211["session_start"], "total_cost": "1e1000000"}),
        ("/ocpi/emsp/2.3.0/sessions/IN/CPA/H1", {**V230["session_example_2_short_finished"],
                                                 "total_cost": {"before_taxes": "1e1000000"}}),
        ("/ocpi/emsp/2.1.1/sessions/IN/CPA/H1", {**V211["session_start"], "auth_id": "C\x00X"}),
    ],
    ids=["2.1.1-huge-exponent", "2.3.0-huge-exponent", "2.1.1-nul-in-auth-id"],
)  # fmt: skip
def test_absurd_numbers_and_nul_bytes_are_protocol_errors_not_500s(
    ocpi: OcpiTestClient, partner: Partner, body: dict[str, Any], path: str
) -> None:
    response = ocpi.put(path, body)
    assert response.status_code < 500, response.content[:300]
    assert response.json()["status_code"] != 3000
    stored = ChargingSession.objects.filter(session_id="H1").first()
    assert stored is None or stored.total_cost_excl_vat is None or abs(stored.total_cost_excl_vat) < 10**12


@pytest.mark.parametrize("start", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_a_2_1_1_cdr_at_the_ends_of_time_is_refused_not_a_500(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location, start: str
) -> None:
    cdr = example(V211, "cdr", start_date_time=start)
    cdr["location"] = {**cdr["location"], "id": "LOC1", "country": "IND"}
    response = ocpi.post("/ocpi/emsp/2.1.1/cdrs", cdr)
    assert response.status_code < 500 and response.json()["status_code"] == 2001, response.content[:300]


def test_money_with_more_digits_than_we_keep_is_refused_never_rounded(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    """A 2.1.1 cost is judged as the same cost in 2.2.1 would be (more than 15 significant digits: refused,
    naming the field), not turned into a float on the way and stored rounded."""
    evse = bengaluru.evses.order_by("pk").first()
    assert evse is not None
    where = {"id": "LOC1", "evses": [{"uid": evse.uid, "connectors": [{"id": "1"}]}]}
    body = example(V211, "session_start", id="D1", total_cost="12.3456789012345678")
    body["location"] = {**body["location"], **where}
    answer = ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/D1", body).json()
    assert answer["status_code"] == 2001 and "total_cost" in answer["status_message"], answer
    assert not ChargingSession.objects.filter(session_id="D1").exists()
    body["total_cost"] = "12.5"
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/D1", body).json()["status_code"] == 1000
    assert ChargingSession.objects.get(session_id="D1").total_cost_excl_vat == Decimal("12.5")


def test_our_copy_of_a_cdr_is_read_back_in_the_version_it_came_in(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    cdr = example(V211, "cdr")
    cdr["location"] = {**cdr["location"], "id": "LOC1", "country": "IND"}
    posted = ocpi.post("/ocpi/emsp/2.1.1/cdrs", cdr)
    assert posted.json()["status_code"] == 1000, posted.json()
    assert "/ocpi/emsp/2.1.1/cdrs/IN/CPA/12345" in posted["Location"]
    read = ocpi.get("/ocpi/emsp/2.1.1/cdrs/IN/CPA/12345").json()["data"]
    assert "location" in read and "cdr_location" not in read
    assert not isinstance(read["total_cost"], dict)  # 2.1.1: a number, excluding VAT


def test_a_card_session_seen_late_does_not_take_the_next_bookings_start(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    """No start of ours began it (a card charge), reported an hour after it ended; our START_SESSION of the
    driver's next booking, sent since, is that booking's session's (it had been taken by the card session, and the
    booking's own session left without it)."""
    from datetime import timedelta

    from django.utils import timezone

    evse = bengaluru.evses.order_by("pk").first()
    now, t0 = timezone.now(), timezone.now() - timedelta(minutes=150)
    start_at(partner, evse, "REF-2", now - timedelta(minutes=20))
    card = session_211("S1", evse.uid, t0, "COMPLETED", t0 + timedelta(minutes=60))
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S1", card).json()["status_code"] == 1000
    own = session_211("S2", evse.uid, now - timedelta(minutes=19), "ACTIVE")
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S2", own).json()["status_code"] == 1000
    assert dict(ChargingSession.objects.values_list("session_id", "authorization_reference")) == {
        "S1": "",
        "S2": "REF-2",
    }


@pytest.mark.parametrize(("version", "allowed"), [("2.1.1", True), ("2.2.1", False), ("2.3.0", False)])
def test_options_offers_a_tariff_patch_in_2_1_1_only(
    ocpi: OcpiTestClient, partner: Partner, version: str, allowed: bool
) -> None:
    answer = ocpi._call("options", f"/ocpi/emsp/{version}/tariffs/IN/CPA/T1")
    assert answer.status_code == 200 and ("PATCH" in answer["Allow"]) == allowed


def test_a_2_1_1_location_and_evse_of_39_characters_are_kept_with_their_sessions_and_cdrs(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    """Location.id and EVSE.uid are string(39) in 2.1.1 (CiString(36) from 2.2): such a CPO's own ids had been
    refused (2001), and every session and CDR naming them lost with them."""
    from billing.models import Cdr

    location_id, evse_uid = "LOCATION-" + "1" * 30, "EVSE-" + "2" * 34
    assert len(location_id) == len(evse_uid) == 39
    body = copy.deepcopy(V211["location"])
    body["id"] = location_id
    body["evses"][0]["uid"] = evse_uid
    assert ocpi.put(f"/ocpi/emsp/2.1.1/locations/IN/CPA/{location_id}", body).json()["status_code"] == 1000
    evse = Evse.objects.get(location__location_id=location_id, uid=evse_uid)
    patched = ocpi.patch(f"/ocpi/emsp/2.1.1/locations/IN/CPA/{location_id}/{evse_uid}", {"status": "CHARGING"})
    assert patched.json()["status_code"] == 1000
    evse.refresh_from_db()
    assert evse.status == "CHARGING"

    token = TokenFactory(uid="012345678", contract_id="DE8ACC12E46L89")
    where = {"id": location_id, "evses": [{"uid": evse_uid, "connectors": [{"id": "1"}]}]}
    session = example(V211, "session_finished", id="S-39", start_datetime="2015-06-29T21:39:09Z", location=where)
    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S-39", session).json()["status_code"] == 1000
    stored = ChargingSession.objects.get(session_id="S-39")
    assert (stored.ocpi_location_id, stored.evse_uid, stored.evse) == (location_id, evse_uid, evse)

    cdr = example(V211, "cdr")
    cdr["location"] = {**cdr["location"], "id": location_id, "country": "IND"}
    cdr["location"]["evses"][0]["uid"] = evse_uid
    assert ocpi.post("/ocpi/emsp/2.1.1/cdrs", cdr).json()["status_code"] == 1000
    bill = Cdr.objects.get(cdr_id="12345")
    assert (bill.location_id, bill.evse_uid, bill.charging_session) == (location_id, evse_uid, stored)

    asked = ocpi.post(
        f"/ocpi/emsp/2.1.1/tokens/{token.uid}/authorize", {"location_id": location_id, "evse_uids": [evse_uid]}
    )
    assert asked.json()["status_code"] == 1000
