"""Review fixes to what Sessions, CDRs and Tariffs accept: a session's periods bounded and merged in linear time, the
text "null" read as null, a tariff type we can't read refused, and the spec's prose word RESERVED read as
RESERVATION."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billing.models import Cdr, Tariff
from billing.pricing.calculate import MAX_PERIODS as PRICED_PERIODS
from emsp.models import ChargingSession
from emsp.services import sessions
from ocpi.models import DataQualityIssue
from ocpi.normalize import ISSUE_CODES
from tests.conftest import OcpiTestClient

pytestmark = pytest.mark.django_db

SESSION = "/ocpi/emsp/2.2.1/sessions/BE/BEC/101"
CDRS = "/ocpi/emsp/2.2.1/cdrs"
TARIFF = "/ocpi/emsp/2.2.1/tariffs/BE/BEC"


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def session(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("session_example_2_short_finished.json")  # 2015-06-29 22:39:09 to 23:50:16, COMPLETED


@pytest.fixture
def cdr(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("cdr_example.json")  # 21:39:09 to 23:37:32 (1.973 h), 15.342 kWh, total_time 1.973


@pytest.fixture
def tariff(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return {**spec_example("tariff_8_simple_025kwh.json"), "country_code": "BE", "party_id": "BEC"}


def _periods(count: int, volume: float, first: int = 0) -> list[dict[str, Any]]:
    """`count` distinct periods a second apart from 21:40:00, inside the session's window (an hour either side)."""
    start = datetime(2015, 6, 29, 21, 40, tzinfo=UTC)
    return [
        {
            "start_date_time": (start + timedelta(seconds=first + i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "dimensions": [{"type": "ENERGY", "volume": volume}],
        }
        for i in range(count)
    ]


def _held() -> int:
    return len(ChargingSession.objects.get().data["charging_periods"])


def _codes() -> set[str]:
    return set(DataQualityIssue.objects.values_list("code", flat=True))


# --- 1. charging periods: bounded, merged in linear time ------------------------------------------------------


def test_the_domain_holds_a_session_to_the_periods_billing_prices() -> None:
    assert sessions.MAX_PERIODS == PRICED_PERIODS  # duplicated: the domain may not import billing


def test_a_patch_that_would_make_a_session_hold_more_periods_than_we_price_is_refused(
    bec: OcpiTestClient, session: dict[str, Any]
) -> None:
    assert bec.put(SESSION, {**session, "charging_periods": _periods(PRICED_PERIODS, 1)}).json()["status_code"] == 1000
    patch = {"charging_periods": _periods(PRICED_PERIODS, 2), "last_updated": "2015-06-29T23:55:00Z"}
    answer = bec.patch(SESSION, patch).json()
    assert answer["status_code"] == 2001
    assert "at most 10000" in answer["status_message"]
    assert _held() == PRICED_PERIODS
    assert ChargingSession.objects.get().data["last_updated"] == session["last_updated"]  # nothing else changed


def test_a_late_patch_that_would_make_a_session_hold_too_many_periods_is_refused(
    bec: OcpiTestClient, session: dict[str, Any]
) -> None:
    bec.put(SESSION, {**session, "charging_periods": _periods(PRICED_PERIODS, 1)})
    late = {"charging_periods": _periods(1, 2), "last_updated": "2015-06-29T23:00:00Z"}  # older: periods only
    assert bec.patch(SESSION, late).json()["status_code"] == 2001
    assert _held() == PRICED_PERIODS


def test_a_patch_of_periods_filling_the_session_up_to_the_bound_is_added(
    bec: OcpiTestClient, session: dict[str, Any]
) -> None:
    half = PRICED_PERIODS // 2
    bec.put(SESSION, {**session, "charging_periods": _periods(half, 1)})
    patch = {"charging_periods": _periods(half, 1, first=half), "last_updated": "2015-06-29T23:55:00Z"}
    assert bec.patch(SESSION, patch).json()["status_code"] == 1000
    assert _held() == PRICED_PERIODS
    assert bec.patch(SESSION, patch).json()["status_code"] == 1000  # a retry: none is held twice, none refused
    assert _held() == PRICED_PERIODS


def test_a_put_of_more_periods_than_we_price_is_refused(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    answer = bec.put(SESSION, {**session, "charging_periods": _periods(PRICED_PERIODS + 1, 1)}).json()
    assert answer["status_code"] == 2001
    assert not ChargingSession.objects.exists()


def test_a_period_sent_again_with_its_fields_in_another_order_is_held_once(
    bec: OcpiTestClient, session: dict[str, Any]
) -> None:
    bec.put(SESSION, session)
    period = {"start_date_time": "2015-06-29T23:40:00Z", "dimensions": [{"type": "ENERGY", "volume": 1.5}]}
    reordered = {"dimensions": [{"volume": 1.5, "type": "ENERGY"}], "start_date_time": "2015-06-29T23:40:00Z"}
    bec.patch(SESSION, {"charging_periods": [period], "last_updated": "2015-06-29T23:55:00Z"})
    bec.patch(SESSION, {"charging_periods": [reordered], "last_updated": "2015-06-29T23:56:00Z"})
    assert _held() == len(session["charging_periods"]) + 1


# --- 2. the text "null" ---------------------------------------------------------------------------------------


def test_null_string_is_a_documented_issue_code() -> None:
    assert "null_string" in ISSUE_CODES


def test_a_session_end_date_time_null_as_text_is_absent(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    answer = bec.put(SESSION, {**session, "end_date_time": "null", "status": "ACTIVE"}).json()
    assert answer["status_code"] == 1000, answer
    stored = ChargingSession.objects.get()
    assert stored.end_date_time is None
    assert "end_date_time" not in bec.get(SESSION).json()["data"]
    assert "null_string" in _codes()


def test_an_id_null_as_text_is_an_id_like_any_other(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    # A CiString "null" names something (a meter, a session): read as null, ids "null" had been refused or dropped.
    assert bec.put(SESSION, {**session, "meter_id": "NULL"}).json()["status_code"] == 1000
    assert ChargingSession.objects.get().data.get("meter_id") == "NULL"


def test_a_session_total_cost_undefined_as_text_is_absent(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    assert bec.put(SESSION, {**session, "total_cost": "undefined"}).json()["status_code"] == 1000
    assert "total_cost" not in ChargingSession.objects.get().data


def test_a_cdr_without_its_end_as_text_null_is_refused_as_missing(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    answer = bec.post(CDRS, {**cdr, "end_date_time": "null"}).json()
    assert answer["status_code"] == 2001
    assert "end_date_time missing" in answer["status_message"]
    assert not Cdr.objects.exists()


def test_a_cdrs_optional_text_null_is_not_stored(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    assert bec.post(CDRS, {**cdr, "remark": "Null"}).json()["status_code"] == 1000
    assert "remark" not in Cdr.objects.get().data


def test_another_emsps_cdr_whose_token_party_is_null_text_is_not_read_as_ours(
    bec: OcpiTestClient, cdr: dict[str, Any]
) -> None:
    # Read as null, the token's party went missing and a token without a party counts as ours: the CDR of another
    # eMSP's RFID card was billed to our driver holding the same uid.
    other = {**cdr["cdr_token"], "country_code": "null", "party_id": "null", "uid": "012345678"}
    answer = bec.post(CDRS, {**cdr, "cdr_token": other}).json()
    assert answer["status_code"] == 2001
    assert not Cdr.objects.exists()


@pytest.mark.parametrize("text", ["null", "NULL"])
def test_a_location_evse_and_connector_named_null_are_kept(bec: OcpiTestClient, text: str) -> None:
    from emsp.models import Connector, Evse
    from tests.factories import ocpi_location

    location = ocpi_location("BE", "BEC", text)
    location["evses"][0]["uid"] = text
    location["evses"][0]["connectors"][0]["id"] = text
    assert bec.put(f"/ocpi/emsp/2.2.1/locations/BE/BEC/{text}", location).json()["status_code"] == 1000
    assert Evse.objects.filter(uid=text).exists()
    assert Connector.objects.filter(connector_id=text).exists()


def test_a_tariff_vat_null_as_text_is_read_as_no_vat(bec: OcpiTestClient, tariff: dict[str, Any]) -> None:
    tariff["elements"][0]["price_components"][0]["vat"] = "null"
    assert bec.put(f"{TARIFF}/{tariff['id']}", tariff).json()["status_code"] == 1000
    assert "vat" not in Tariff.objects.get().data["elements"][0]["price_components"][0]


# --- 3. tariff type --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", ["AD-HOC", "ad hoc", "Ad_Hoc_Payment"])
def test_an_ad_hoc_tariff_type_spelled_otherwise_is_read_as_ad_hoc_payment(
    bec: OcpiTestClient, tariff: dict[str, Any], sent: str
) -> None:
    assert bec.put(f"{TARIFF}/{tariff['id']}", {**tariff, "type": sent}).status_code == 201
    assert Tariff.objects.get().type == "AD_HOC_PAYMENT"


def test_a_tariff_type_we_cannot_read_is_refused(bec: OcpiTestClient, tariff: dict[str, Any]) -> None:
    # Dropped, an ad hoc or profile tariff was stored untyped, and untyped is the regular tariff we quote.
    answer = bec.put(f"{TARIFF}/{tariff['id']}", {**tariff, "type": "WEEKEND_SPECIAL"}).json()
    assert answer["status_code"] == 2001
    assert "type" in answer["status_message"]
    assert not Tariff.objects.exists()


# --- 5. RESERVED ------------------------------------------------------------------------------------------------


def test_a_session_status_reserved_is_read_as_reservation(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    body = {**session, "status": "RESERVED", "kwh": 0, "charging_periods": []}
    body.pop("end_date_time")
    answer = bec.put(SESSION, body).json()
    assert answer["status_code"] == 1000, answer
    assert ChargingSession.objects.get().status == "RESERVATION"
    assert "enum_synonym" in _codes()


def test_a_period_sent_again_with_its_volume_written_otherwise_is_held_once(
    bec: OcpiTestClient, session: dict[str, Any]
) -> None:
    period = {"start_date_time": session["start_date_time"], "dimensions": [{"type": "ENERGY", "volume": 1.0}]}
    assert bec.put(SESSION, {**session, "charging_periods": [period]}).json()["status_code"] == 1000
    again = {**period, "dimensions": [{"type": "ENERGY", "volume": 1}]}
    patch = {"charging_periods": [again], "last_updated": "2015-06-29T23:55:00Z"}
    assert bec.patch(SESSION, patch).json()["status_code"] == 1000
    assert len(ChargingSession.objects.get().data["charging_periods"]) == 1


def test_a_blank_tariff_type_is_an_untyped_tariff(bec: OcpiTestClient, tariff: dict[str, Any]) -> None:
    assert bec.put(f"{TARIFF}/{tariff['id']}", {**tariff, "type": " "}).json()["status_code"] == 1000
    assert "type" not in Tariff.objects.get().data
