"""Three defects of a review, each through the literal OCPI paths: a refused location PUT or PATCH marked the CPO
as pushing (its EVSEs then went un-re-read); a 2.1.1 value no spec allows where a string belongs (a list, an
object) refused the whole object where 2.2.1 drops only that value; a connector power derived beyond the
normalizer's own bound was stored. The 2.1.1 objects are the spec's examples (tests/ocpi/spec_examples/)."""

from __future__ import annotations

import base64
import copy
import itertools
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.utils import timezone

from emsp.models import ChargingSession, Connector, Evse, Location, Partner
from emsp.services import catalogue, freshness
from ocpi import enums
from ocpi.models import DataQualityIssue
from ocpi.normalize import normalize_connector
from ocpi.normalize.evses import _MAX_POWER_W
from ocpi.wsgi_lane import OcpiLane
from tests.conftest import CPO_TOKEN, OcpiTestClient
from tests.factories import ocpi_location, stored_location
from tests.wsgi_calls import call_wsgi

pytestmark = pytest.mark.django_db

EXAMPLES = Path(__file__).parent / "spec_examples"
V211: dict[str, Any] = json.loads((EXAMPLES / "ocpi-2.1.1.json").read_text())
TS = "2026-08-02T00:00:00Z"


def example(source: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(source[name]), **changes}


def findings(partner: Partner) -> set[str]:
    return set(DataQualityIssue.objects.filter(partner=partner).values_list("code", flat=True))


# --- 1. only a location object the store took marks its CPO as pushing ------------------------------------------


@pytest.fixture
def watched(partner: Partner) -> Evse:
    """An EVSE of L1 a driver was shown, last heard a minute ago: due to be re-read, its CPO not pushing."""
    stored_location(partner, location_id="L1", evses=1)
    evse = Evse.objects.get()
    freshness.evses_watch([evse.pk])
    Evse.objects.filter(pk=evse.pk).update(status_updated_at=timezone.now() - timedelta(seconds=60))
    assert freshness.partners_to_refresh() == [partner]
    return evse


def test_a_230_cpo_whose_patches_are_all_refused_is_still_re_read(
    ocpi: OcpiTestClient, partner: Partner, watched: Evse
) -> None:
    """2.3.0 requires last_updated in a PATCH: each status PATCH without it is refused, and the EVSE a driver
    booked had never been re-read again (every refusal renewed the 15 minutes of a "pushing" CPO)."""
    answer = ocpi.patch(f"/ocpi/emsp/2.3.0/locations/IN/CPA/L1/{watched.uid}", {"status": "CHARGING"})
    assert answer.json()["status_code"] == 2001
    assert freshness.partners_to_refresh() == [partner]


EVSE_221 = "/ocpi/emsp/2.2.1/locations/IN/CPA/L1/L1-E1"
STATUS = {"status": "CHARGING", "last_updated": TS}


@pytest.mark.parametrize(
    ("method", "path", "body", "http_status", "status_code"),
    [
        ("patch", EVSE_221, {"status": "CHARGING"}, 200, 2001),  # no last_updated (required since 2.2)
        ("patch", "/ocpi/emsp/2.2.1/locations/NL/XXX/L1/L1-E1", STATUS, 404, 2000),  # another party's
        ("patch", "/ocpi/emsp/2.2.1/locations/IN/CPA/L1/NOPE", STATUS, 404, 2000),  # an EVSE we don't hold
        ("patch", f"{EVSE_221}/9", {"max_amperage": 16, "last_updated": TS}, 404, 2000),  # nor a connector
        ("patch", "/ocpi/emsp/2.2.1/locations/IN/CPA/L1", {"id": "L2", "last_updated": TS}, 200, 2001),  # id differs
        ("put", "/ocpi/emsp/2.2.1/locations/IN/CPA/L1", {"id": "L1"}, 200, 2001),  # not a location
        ("put", "/ocpi/emsp/2.2.1/locations/NL/XXX/L1", ocpi_location("NL", "XXX", "L1"), 404, 2000),
        ("put", "/ocpi/emsp/2.2.1/locations/IN/CPA/NOPE/E1", {"uid": "E1", "last_updated": TS}, 404, 2003),
        ("put", f"{EVSE_221}/1", {"id": "1", "standard": "NAPPING", "last_updated": TS}, 200, 2001),
    ],
)
def test_a_refused_location_put_or_patch_does_not_mark_the_cpo_as_pushing(
    ocpi: OcpiTestClient,
    partner: Partner,
    watched: Evse,
    method: str,
    path: str,
    body: dict[str, Any],
    http_status: int,
    status_code: int,
) -> None:
    answer = getattr(ocpi, method)(path, body)
    assert (answer.status_code, answer.json()["status_code"]) == (http_status, status_code), answer.json()
    partner.refresh_from_db()
    assert partner.last_push_at is None
    assert freshness.partners_to_refresh() == [partner]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("patch", f"{EVSE_221}/1", {"max_amperage": 16, "last_updated": TS}),
        ("put", "/ocpi/emsp/2.2.1/locations/IN/CPA/L2", ocpi_location("IN", "CPA", "L2")),
        ("patch", "/ocpi/emsp/2.3.0/locations/IN/CPA/L1/L1-E1/1", {"max_amperage": 16, "last_updated": TS}),
    ],
)
def test_a_location_object_the_store_took_marks_the_cpo_as_pushing(
    ocpi: OcpiTestClient, partner: Partner, watched: Evse, method: str, path: str, body: dict[str, Any]
) -> None:
    assert getattr(ocpi, method)(path, body).json()["status_code"] == 1000
    partner.refresh_from_db()
    assert partner.last_push_at is not None
    assert freshness.partners_to_refresh() == []  # the watched EVSE was not touched: left to the CPO's pushes


def test_a_refused_evse_patch_through_the_lanes_direct_route_does_not_mark_the_cpo_as_pushing(
    partner: Partner, watched: Evse
) -> None:
    """The busiest OCPI request is served straight from ocpi/wsgi_lane.py, by the same view."""
    lane = OcpiLane(WSGIHandler())
    handler, handed = lane.ocpi, []

    def observed(environ: dict[str, Any], start_response: Any) -> Any:  # what the lane leaves to Django
        handed.append(environ["PATH_INFO"])
        return handler(environ, start_response)

    lane.ocpi = observed  # type: ignore[assignment]
    auth = {"Authorization": "Token " + base64.b64encode(CPO_TOKEN.encode()).decode()}
    status, _, content = call_wsgi(lane, "PATCH", EVSE_221, b'{"status": "CHARGING"}', auth)
    assert (status, orjson.loads(content)["status_code"], handed) == ("200 OK", 2001, [])
    assert freshness.partners_to_refresh() == [partner]
    status, _, content = call_wsgi(lane, "PATCH", EVSE_221, orjson.dumps(STATUS), auth)
    assert (status, orjson.loads(content)["status_code"], handed) == ("200 OK", 1000, [])
    partner.refresh_from_db()
    assert partner.last_push_at is not None


# --- 2. a 2.1.1 value that is no string, judged as in 2.2.1 -------------------------------------------------------


def cdr_211() -> dict[str, Any]:
    cdr = example(V211, "cdr")
    cdr["location"] = {**cdr["location"], "country": "BEL"}
    return cdr


@pytest.mark.parametrize("bad_type", [["ENERGY"], {"type": "ENERGY"}])
def test_a_2_1_1_cdr_with_a_dimension_of_no_type_is_taken_without_that_dimension(
    ocpi: OcpiTestClient, partner: Partner, bad_type: Any
) -> None:
    """As a 2.2.1 CDR with the same dimension (the second POST): the bill is taken, the dimension dropped. It had
    been refused whole (2000 "unhashable type")."""
    from billing.models import Cdr

    cdr = cdr_211()
    cdr["charging_periods"][0]["dimensions"].append({"type": bad_type, "volume": 1})
    answer = ocpi.post("/ocpi/emsp/2.1.1/cdrs", cdr)
    assert answer.json()["status_code"] == 1000, answer.json()
    stored = Cdr.objects.get(cdr_id="12345")
    assert stored.data["charging_periods"][0]["dimensions"] == [{"type": "TIME", "volume": 1.973}]
    as_221 = ocpi.get("/ocpi/emsp/2.2.1/cdrs/IN/CPA/12345").json()["data"]
    as_221["id"] = "12346"
    as_221["charging_periods"][0]["dimensions"].append({"type": bad_type, "volume": 1})
    assert ocpi.post("/ocpi/emsp/2.2.1/cdrs", as_221).json()["status_code"] == 1000
    assert Cdr.objects.get(cdr_id="12346").data["charging_periods"] == stored.data["charging_periods"]


def test_a_2_1_1_cdrs_flat_dimension_is_still_dropped(ocpi: OcpiTestClient, partner: Partner) -> None:
    from billing.models import Cdr

    cdr = cdr_211()
    cdr["charging_periods"][0]["dimensions"].append({"type": "FLAT", "volume": 1})
    assert ocpi.post("/ocpi/emsp/2.1.1/cdrs", cdr).json()["status_code"] == 1000
    assert Cdr.objects.get(cdr_id="12345").data["charging_periods"][0]["dimensions"] == [
        {"type": "TIME", "volume": 1.973}
    ]


def test_a_2_1_1_session_with_a_dimension_of_no_type_is_taken_without_that_dimension(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    """A 2.1.1 Session's charging periods are mapped as a CDR's (v211.upgrade_charging_period)."""
    catalogue.locations_store(partner, [ocpi_location("IN", "CPA", "LOC1")])
    evse = Evse.objects.order_by("pk").first()
    assert evse is not None
    session = example(V211, "session_finished")
    session["location"] = {**session["location"], "evses": [{"uid": evse.uid, "connectors": [{"id": "1"}]}]}
    session["charging_periods"][0]["dimensions"].append({"type": ["ENERGY"], "volume": 1})
    answer = ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/101", session)
    assert answer.json()["status_code"] == 1000, answer.json()
    periods = ChargingSession.objects.get(session_id="101").data["charging_periods"]
    assert periods[0]["dimensions"] == [{"type": "ENERGY", "volume": 120}, {"type": "MAX_CURRENT", "volume": 30}]


@pytest.mark.parametrize("bad_type", [{"x": 1}, ["ON_STREET"]])
def test_a_2_1_1_location_type_that_is_no_string_is_dropped_as_a_2_2_1_parking_type_is(
    ocpi: OcpiTestClient, partner: Partner, bad_type: Any
) -> None:
    """As 2.2.1 treats `"parking_type": {"x": 1}`: the location is taken without it, and the CPO is told."""
    answer = ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", {**example(V211, "location"), "type": bad_type})
    assert answer.json()["status_code"] == 1000, answer.json()
    assert "parking_type" not in Location.objects.get(location_id="LOC1").data
    assert "unknown_enum" in findings(partner)
    DataQualityIssue.objects.all().delete()
    answer = ocpi.put(
        "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC2", {**ocpi_location(location_id="LOC2"), "parking_type": bad_type}
    )
    assert answer.json()["status_code"] == 1000
    assert "parking_type" not in Location.objects.get(location_id="LOC2").data
    assert "unknown_enum" in findings(partner)


def test_a_2_1_1_location_patch_of_a_type_that_is_no_string_leaves_ours(ocpi: OcpiTestClient, partner: Partner) -> None:
    assert ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", example(V211, "location")).json()["status_code"] == 1000
    answer = ocpi.patch("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", {"type": ["OTHER"]})
    assert answer.json()["status_code"] == 1000, answer.json()
    assert Location.objects.get(location_id="LOC1").data["parking_type"] == "ON_STREET"
    assert "unknown_enum" in findings(partner)


# --- 3. a derived connector power beyond the normalizer's bound is unknown ----------------------------------------


def test_a_2_1_1_connector_power_derived_beyond_the_bound_is_left_unknown(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    """2,000 V and 5,000 A each pass their bound; 2000 x 5000 x sqrt 3 = 17.3 MW does not pass the power's
    (10 MW: "a unit or typing error"), and had been stored, the EVSE offered as a 17 MW charger."""
    location = example(V211, "location")
    location["evses"][0]["connectors"][0].update(power_type="AC_3_PHASE", voltage=2000, amperage=5000)
    assert ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", location).json()["status_code"] == 1000
    connector = Connector.objects.get(evse__uid="3256", connector_id="1")
    assert connector.max_electric_power is None and "max_electric_power" not in connector.data
    assert (connector.max_voltage, connector.max_amperage) == (2000, 5000)
    assert Evse.objects.get(uid="3256").max_power_w == 10_560  # its other connector's 220 V x 16 A x 3
    issue = DataQualityIssue.objects.get(partner=partner, code="implausible_value")
    assert issue.path.endswith("max_electric_power") and "17320508" in issue.message and not issue.fixed


def test_a_2_1_1_connector_patch_deriving_a_power_beyond_the_bound_leaves_it_unknown(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    assert ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", example(V211, "location")).json()["status_code"] == 1000
    patch = {"voltage": 2000, "amperage": 5000}
    assert ocpi.patch("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1/3256/2", patch).json()["status_code"] == 1000
    connector = Connector.objects.get(evse__uid="3256", connector_id="2")
    assert connector.max_electric_power is None and connector.data.get("max_electric_power") is None
    assert (connector.max_voltage, connector.max_amperage) == (2000, 5000)
    assert Evse.objects.get(uid="3256").max_power_w == 10_560  # connector 1's


@pytest.mark.parametrize(
    ("power_type", "power"),
    [("AC_3_PHASE", None), ("DC", _MAX_POWER_W)],  # 2000 V x 5000 A x sqrt 3 is beyond; x 1, at the bound
)
def test_a_2_2_1_connector_sent_without_power_takes_a_derived_one_only_within_the_bound(
    ocpi: OcpiTestClient, partner: Partner, power_type: str, power: int | None
) -> None:
    location: Any = ocpi_location(location_id="LOC1", evses=1)
    connector = location["evses"][0]["connectors"][0]
    connector.update(power_type=power_type, max_voltage=2000, max_amperage=5000)
    del connector["max_electric_power"]
    assert ocpi.put("/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1", location).json()["status_code"] == 1000
    assert Connector.objects.get(evse__uid="LOC1-E1").max_electric_power == power
    assert Evse.objects.get(uid="LOC1-E1").max_power_w == power


def test_the_catalogues_derivation_is_the_normalizers_up_to_and_beyond_the_bound() -> None:
    """emsp may not import ocpi: the catalogue's copy of the rule must also leave unknown what the normalizer
    leaves unknown."""
    voltages, amperages = (230, 251, 1154, 1155, 2000), (32, 2887, 2888, 5000)
    for power_type, voltage, amperage in itertools.product(enums.POWER_TYPES, voltages, amperages):
        raw = {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": power_type}
        clean, _ = normalize_connector({**raw, "max_voltage": voltage, "max_amperage": amperage, "last_updated": TS})
        derived = catalogue._derived_power_w(clean)
        assert derived == clean.get("max_electric_power"), (power_type, voltage, amperage)
        assert derived is None or 0 < derived <= _MAX_POWER_W


@pytest.mark.parametrize(
    ("sent", "stored", "finding"),
    [("on_street", "ON_STREET", "enum_case"), ("CAR_PARK", None, "unknown_enum"), ("PARKING_LOT", "PARKING_LOT", None)],
)
def test_a_2_1_1_location_type_is_judged_as_a_2_2_1_parking_type(
    ocpi: OcpiTestClient, partner: Partner, sent: str, stored: str | None, finding: str | None
) -> None:
    """A LocationType in another case was dropped unsaid (the driver's filter then missed an on-street charger),
    and a value of no LocationType with no finding: the normalizer reads its case, or drops it saying so."""
    location = example(V211, "location", type=sent)
    assert ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", location).json()["status_code"] == 1000
    assert Location.objects.get(location_id="LOC1").data.get("parking_type") == stored
    if finding:
        assert finding in findings(partner)


def test_a_2_1_1_patch_of_type_other_in_any_case_clears_the_parking_type(ocpi: OcpiTestClient) -> None:
    assert ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", example(V211, "location")).json()["status_code"] == 1000
    assert ocpi.patch("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", {"type": "other"}).json()["status_code"] == 1000
    assert "parking_type" not in Location.objects.get(location_id="LOC1").data
