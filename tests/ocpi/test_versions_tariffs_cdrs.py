"""Tariffs and CDRs of OCPI 2.1.1 and 2.3.0: what a CPO sends in its version is stored as our one model keeps
it (2.2.1-shaped, plus 2.3.0's taxes), and what we hold reads back in each version's shape. The objects are
the specs' examples (tests/billing/spec_examples/); receivers at literal spec paths."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.models import Cdr, CdrAudit, Dispute, Tariff
from billing.services.audit import cdr_audit
from ocpi.models import DataQualityIssue
from ocpi.normalize import Rejected, normalize_cdr, normalize_tariff
from ocpi.normalize.sessions import CDR_FIELDS, CDR_LOCATION_FIELDS
from ocpi.normalize.tariffs import TARIFF_FIELDS
from ocpi.versions.cdrs import downgrade_cdr, upgrade_cdr
from ocpi.versions.common import Context
from ocpi.versions.tariffs import downgrade_tariff, upgrade_tariff
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory

EXAMPLES = Path(__file__).parents[1] / "billing" / "spec_examples"
V211: dict[str, Any] = json.loads((EXAMPLES / "ocpi-2.1.1-tariffs-cdrs.json").read_text())
V230: dict[str, Any] = json.loads((EXAMPLES / "ocpi-2.3.0-tariffs-cdrs.json").read_text())
OWNER = Context(owner=("NL", "TNM"))


def example(source: dict[str, Any], name: str) -> dict[str, Any]:
    return copy.deepcopy(source[name])


def as_decimals(value: Any) -> Any:
    """JSON numbers compared as numbers (the specs write 0.50, we keep 0.5)."""
    if isinstance(value, dict):
        return {k: as_decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_decimals(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    return value


def stored_tariff(raw: dict[str, Any], version: str, ctx: Context = OWNER) -> dict[str, Any]:
    obj, _ = normalize_tariff(upgrade_tariff(raw, version, ctx))
    return obj


def stored_cdr(raw: dict[str, Any], version: str, ctx: Context = OWNER) -> tuple[dict[str, Any], list[Any]]:
    return normalize_cdr(upgrade_cdr(raw, version, ctx))


# --- tariffs: in and back out --------------------------------------------------------------------------------

# tariff_5 says step_size 0, which we read as 1 (a finding); the PUT example has no party and no last_updated.
ROUND_TRIP_230 = sorted(
    k for k in V230 if k.startswith("tariff") and k not in ("tariff_5_free_of_charge", "tariff_put_example")
)


@pytest.mark.parametrize("name", ROUND_TRIP_230)
def test_every_2_3_0_tariff_example_reads_back_as_it_was_sent(name: str) -> None:
    raw = example(V230, name)
    assert as_decimals(downgrade_tariff(stored_tariff(raw, "2.3.0"), "2.3.0")) == as_decimals(raw)


@pytest.mark.parametrize(
    "name", ["tariff_put_example", "tariff_simple_2_euro_per_hour", "tariff_alt_text", "tariff_complex"]
)
def test_2_1_1_tariff_examples_take_the_owner_and_read_back_as_sent(name: str) -> None:
    raw = example(V211, name)
    obj, issues = normalize_tariff(upgrade_tariff(raw, "2.1.1", OWNER))
    assert (obj["country_code"], obj["party_id"]) == ("NL", "TNM")
    assert "missing_country_code" not in {i.code for i in issues}
    back = downgrade_tariff(obj, "2.1.1")
    if "last_updated" not in raw:  # the PUT example: the normaliser stamps the receive time
        back.pop("last_updated")
    assert as_decimals(back) == as_decimals(raw)


def test_a_price_limit_becomes_excl_and_incl_and_tax_included_is_kept() -> None:
    obj = stored_tariff(example(V230, "tariff_12_025kwh_min_price"), "2.3.0")
    assert as_decimals(obj["min_price"]) == {"excl_vat": Decimal("0.5"), "incl_vat": Decimal("0.55")}
    assert obj["tax_included"] == "NO"


def test_tax_included_is_read_leniently_on_case_and_an_unknown_value_refuses_the_tariff() -> None:
    raw = example(V230, "tariff_20_simple_north_american_inclusive")
    obj, issues = normalize_tariff(upgrade_tariff({**raw, "tax_included": " yes"}, "2.3.0"))
    assert obj["tax_included"] == "YES"
    assert [i.code for i in issues] == ["enum_case"]
    with pytest.raises(Rejected) as refused:
        normalize_tariff(upgrade_tariff({**raw, "tax_included": "SOMETIMES"}, "2.3.0"))
    assert refused.value.path == "tax_included"


def test_2_2_1_reads_our_tariff_without_the_2_3_0_fields() -> None:
    obj = {
        **stored_tariff(example(V230, "tariff_20_simple_north_american_inclusive"), "2.3.0"),
        "preauthorize_amount": 20,
    }
    out = downgrade_tariff(obj, "2.2.1")
    assert set(out) <= TARIFF_FIELDS - {"tax_included", "preauthorize_amount"}


def test_2_1_1_gets_no_element_it_would_apply_in_the_wrong_place() -> None:
    # A reservation element and a current restriction have no 2.1.1 words: a 2.1.1 reader would apply them to
    # every charge. VAT, type, min_price and the validity window have none either.
    ours = stored_tariff(example(V230, "tariff_16_reservation_2_euro_fee_5_euro_per_hour"), "2.3.0")
    ours.update(type="REGULAR", min_price={"excl_vat": 1}, end_date_time="2030-01-01T00:00:00Z")
    ours["elements"].append(
        {"price_components": [{"type": "TIME", "price": 1, "step_size": 60}], "restrictions": {"max_current": 16}}
    )
    out = downgrade_tariff(ours, "2.1.1")
    assert set(out) == {"id", "currency", "elements", "last_updated"}
    assert [e.get("restrictions") for e in out["elements"]] == [None]
    assert all("vat" not in c for e in out["elements"] for c in e["price_components"])


# --- CDRs ------------------------------------------------------------------------------------------------------


def test_the_2_3_0_cdr_example_keeps_its_taxes_and_its_tariff_prices() -> None:
    obj, issues = stored_cdr(example(V230, "cdr_example"), "2.3.0")
    assert issues == []
    for key in ("total_cost", "total_time_cost"):
        assert as_decimals(obj[key]) == {
            "excl_vat": Decimal("4.0"),
            "incl_vat": Decimal("4.4"),
            "taxes": [{"name": "VAT", "amount": Decimal("0.4")}],
        }
    back = downgrade_cdr(obj, "2.3.0")
    assert as_decimals(back["total_cost"]) == as_decimals(V230["cdr_example"]["total_cost"])
    assert back["tariffs"][0]["tax_included"] == "NO"  # the example's tariff states none: 2.2.1's meaning


def test_a_2_3_0_emaid_token_is_read_as_other() -> None:
    raw = example(V230, "cdr_example")
    raw["cdr_token"]["type"] = "EMAID"
    obj, _ = stored_cdr(raw, "2.3.0")
    assert obj["cdr_token"]["type"] == "OTHER"


def test_a_2_3_0_cdr_location_nacs_connector_is_read_as_2_2_1_says_it() -> None:
    raw = example(V230, "cdr_example")
    raw["cdr_location"]["connector_standard"] = "SAE_J3400"
    obj, _ = stored_cdr(raw, "2.3.0")
    assert obj["cdr_location"]["connector_standard"] == "TESLA_S"


def test_an_unreadable_tax_line_is_dropped_and_reported() -> None:
    raw = example(V230, "cdr_example")
    raw["total_cost"]["taxes"].append({"name": "GST", "amount": "lots"})
    obj, issues = stored_cdr(raw, "2.3.0")
    assert [t["name"] for t in obj["total_cost"]["taxes"]] == ["VAT"]
    assert ("total_cost.taxes[1]", "invalid_number") in {(i.path, i.code) for i in issues}


def test_the_2_1_1_cdr_example_becomes_a_cdr_with_location_token_and_owner() -> None:
    ctx = Context(owner=("BE", "BEC"), emsp=("IN", "EMS"), token_for=lambda contract: ("012345678", "RFID"))
    obj, issues = stored_cdr(example(V211, "cdr_example"), "2.1.1", ctx)
    assert (obj["country_code"], obj["party_id"], obj["end_date_time"]) == ("BE", "BEC", "2015-06-29T23:37:32Z")
    assert obj["cdr_token"] == {
        "country_code": "IN",
        "party_id": "EMS",
        "uid": "012345678",
        "type": "RFID",
        "contract_id": "DE8ACC12E46L89",
    }
    location = obj["cdr_location"]
    assert (location["evse_uid"], location["evse_id"], location["connector_id"]) == ("3256", "BE-BEC-E041503003", "1")
    assert (location["connector_standard"], location["connector_power_type"]) == ("IEC_62196_T2", "AC_1_PHASE")
    assert as_decimals(obj["total_cost"]) == {"excl_vat": Decimal("4.0")}
    # The 2.1.1 example's own deviations from its spec: country "BE" where ISO 3166 alpha-3 is due, and its
    # tariff's price "2.00" a string where a number is.
    assert {(i.path, i.code) for i in issues} == {
        ("cdr_location.country", "country_alpha2"),
        ("tariffs[0].elements[0].price_components[0].price", "type_coerced"),
    }


def test_a_2_1_1_location_time_zone_prices_the_cdr_in_local_time() -> None:
    raw = example(V211, "cdr_example")
    raw["location"]["time_zone"] = "Europe/Brussels"
    obj, _ = stored_cdr(raw, "2.1.1")
    assert obj["cdr_location"]["time_zone"] == "Europe/Brussels"
    from billing.pricing import price_cdr

    result = price_cdr(obj)
    assert result.time_zone == "Europe/Brussels"
    assert "time_zone_unknown_assumed_utc" not in result.warnings


def test_a_2_1_1_flat_dimension_is_left_out_without_a_finding() -> None:
    raw = example(V211, "cdr_example")
    raw["charging_periods"][0]["dimensions"].append({"type": "FLAT", "volume": 1})
    obj, issues = stored_cdr(raw, "2.1.1")
    assert [d["type"] for d in obj["charging_periods"][0]["dimensions"]] == ["TIME"]
    assert "invalid_dimension" not in {i.code for i in issues}


def test_our_cdr_reads_back_in_2_1_1_shape() -> None:
    ctx = Context(owner=("BE", "BEC"), token_for=lambda contract: ("012345678", "RFID"))
    raw = example(V211, "cdr_example")
    obj, _ = stored_cdr(raw, "2.1.1", ctx)
    back = downgrade_cdr(obj, "2.1.1")
    assert (back["stop_date_time"], back["auth_id"], back["total_cost"]) == (
        raw["stop_date_time"],
        raw["auth_id"],
        4,
    )
    assert "cdr_location" not in back and "country_code" not in back
    evse = back["location"]["evses"][0]
    assert (evse["uid"], evse["connectors"][0]["id"]) == ("3256", "1")
    expected = as_decimals(raw["tariffs"])
    expected[0]["elements"][0]["price_components"][0]["price"] = Decimal("2.00")  # sent as the string "2.00"
    assert as_decimals(back["tariffs"]) == expected


def test_2_2_1_reads_our_cdr_without_the_fields_it_lacks() -> None:
    raw = example(V211, "cdr_example")
    raw["location"]["time_zone"] = "Europe/Brussels"
    from_211, _ = stored_cdr(raw, "2.1.1")
    from_230, _ = stored_cdr(example(V230, "cdr_example"), "2.3.0")
    for obj in (from_211, from_230):
        out = downgrade_cdr(obj, "2.2.1")
        assert set(out) <= CDR_FIELDS
        assert set(out["cdr_location"]) <= CDR_LOCATION_FIELDS - {"time_zone"}
        assert "taxes" not in out["total_cost"]
        assert all(set(t) <= TARIFF_FIELDS - {"tax_included", "preauthorize_amount"} for t in out.get("tariffs", []))


# --- through our receivers --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_2_3_0_cpo_puts_its_taxes_included_tariff(client_for: Callable[..., OcpiTestClient]) -> None:
    flo = client_for("CA", "FLO")
    response = flo.put("/ocpi/emsp/2.3.0/tariffs/CA/FLO/12", V230["tariff_20_simple_north_american_inclusive"])
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    tariff = Tariff.objects.get(tariff_id="12")
    assert (tariff.tax_included, tariff.data["tax_included"], tariff.currency) == ("YES", "YES", "CAD")


@pytest.mark.django_db
def test_a_2_3_0_tariff_with_an_unknown_tax_included_is_refused(client_for: Callable[..., OcpiTestClient]) -> None:
    flo = client_for("CA", "FLO")
    body = {**V230["tariff_20_simple_north_american_inclusive"], "tax_included": "SOMETIMES"}
    assert flo.put("/ocpi/emsp/2.3.0/tariffs/CA/FLO/12", body).json()["status_code"] == 2001
    assert not Tariff.objects.exists()


@pytest.mark.django_db
def test_a_2_1_1_cpo_puts_its_tariff_example_under_its_own_party(ocpi: OcpiTestClient) -> None:
    response = ocpi.put("/ocpi/emsp/2.1.1/tariffs/IN/CPA/12", V211["tariff_put_example"])
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    tariff = Tariff.objects.get(tariff_id="12")
    assert (tariff.country_code, tariff.party_id, tariff.tax_included) == ("IN", "CPA", "")
    codes = set(DataQualityIssue.objects.values_list("code", flat=True))
    assert not codes & {"missing_country_code", "missing_party_id"}


@pytest.mark.django_db
def test_a_2_3_0_cdr_is_stored_with_its_taxes_and_audits_to_its_own_total(
    client_for: Callable[..., OcpiTestClient],
) -> None:
    bec = client_for("BE", "BEC")
    response = bec.post("/ocpi/emsp/2.3.0/cdrs", V230["cdr_example"])
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    cdr = Cdr.objects.get(cdr_id="12345")
    assert (cdr.total_cost_excl_vat, cdr.total_cost_incl_vat) == (Decimal("4"), Decimal("4.4"))
    assert cdr.total_cost_taxes == [{"name": "VAT", "amount": 0.4}]
    audit = cdr_audit(cdr)
    assert (audit.computed_excl_vat, audit.computed_incl_vat) == (Decimal("4"), Decimal("4.4"))
    assert {Decimal(v) for v in audit.our_breakdown["differences"].values()} == {Decimal(0)}
    assert not Dispute.objects.exists()


@pytest.mark.django_db
def test_a_2_1_1_cdr_of_our_token_is_stored_and_audits_to_its_own_total(
    client_for: Callable[..., OcpiTestClient],
) -> None:
    TokenFactory(uid="012345678", contract_id="DE8ACC12E46L89")
    bec = client_for("BE", "BEC")
    response = bec.post("/ocpi/emsp/2.1.1/cdrs", V211["cdr_example"])
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    cdr = Cdr.objects.get(cdr_id="12345")
    assert (cdr.token_uid, cdr.evse_uid, cdr.total_cost_excl_vat, cdr.total_cost_incl_vat) == (
        "012345678",
        "3256",
        Decimal("4"),
        None,
    )
    audit = cdr_audit(cdr)
    assert audit.computed_excl_vat == Decimal("4")
    assert audit.difference_excl_vat == 0


@pytest.mark.django_db
def test_a_cdr_priced_with_taxes_of_unstated_rates_is_reviewed_not_disputed(
    client_for: Callable[..., OcpiTestClient],
) -> None:
    # tariff_20 (C$ 2.10/h, taxes included, no rate): we know 5.25 after taxes, not the amount before them.
    flo = client_for("CA", "FLO")
    body = example(V230, "cdr_example")
    tariff = {**V230["tariff_20_simple_north_american_inclusive"], "id": "12"}
    body.update(country_code="CA", party_id="FLO", currency="CAD", tariffs=[tariff])
    body["charging_periods"][0]["dimensions"][0]["volume"] = 2.5
    body["total_cost"] = {
        "before_taxes": 4.60,
        "taxes": [{"name": "GST", "amount": 0.23}, {"name": "QST", "amount": 0.42}],
    }
    body.pop("total_time_cost")
    assert flo.post("/ocpi/emsp/2.3.0/cdrs", body).json()["status_code"] == 1000
    audit = cdr_audit(Cdr.objects.get(cdr_id="12345"))
    assert (audit.status, audit.computed_excl_vat, audit.computed_incl_vat) == (
        CdrAudit.Status.REVIEW,
        None,
        Decimal("5.25"),
    )
    assert "tax_rate_unknown" in audit.flags
    assert not Dispute.objects.exists()


@pytest.mark.django_db
def test_a_2_3_0_cdr_of_an_mcs_connector_reads_back_with_it(client_for: Callable[..., OcpiTestClient]) -> None:
    """CdrLocation.connector_standard is required (mod_cdrs 2.3.0): it had been dropped from our copy, and the
    CDR read back without it."""
    bec = client_for("BE", "BEC")
    cdr = example(V230, "cdr_example")
    cdr["cdr_location"] = {**cdr["cdr_location"], "connector_standard": "MCS"}
    assert bec.post("/ocpi/emsp/2.3.0/cdrs", cdr).json()["status_code"] == 1000
    read = bec.get(f"/ocpi/emsp/2.3.0/cdrs/BE/BEC/{cdr['id']}").json()["data"]
    assert read["cdr_location"]["connector_standard"] == "MCS"


@pytest.mark.django_db
@pytest.mark.parametrize("version", ["2.2.1", "2.1.1"])
def test_a_cdr_of_an_mcs_connector_is_not_read_back_in_a_version_that_lacks_it(
    client_for: Callable[..., OcpiTestClient], version: str
) -> None:
    """CdrLocation.connector_standard (2.2.1) and the 2.1.1 Location's Connector.standard are required: a value
    that version lacks is named in an error, not sent."""
    bec = client_for("BE", "BEC")
    cdr = example(V230, "cdr_example")
    cdr["cdr_location"] = {**cdr["cdr_location"], "connector_standard": "MCS"}
    assert bec.post("/ocpi/emsp/2.3.0/cdrs", cdr).json()["status_code"] == 1000
    read = bec.get(f"/ocpi/emsp/{version}/cdrs/BE/BEC/{cdr['id']}").json()
    assert read["status_code"] == 3000 and "MCS" in read["status_message"]


@pytest.mark.django_db
def test_a_2_1_1_tariff_patch_changes_its_price(client_for: Callable[..., OcpiTestClient]) -> None:
    """mod_tariffs 2.1.1: the eMSP's interface takes PUT and PATCH. It had been answered 405, the price change
    lost while quotes and CDR audits went on with the old price; 2.2.1 has no tariff PATCH."""
    bec = client_for("BE", "BEC")
    tariff = example(V211, "tariff_simple_2_euro_per_hour")
    assert bec.put("/ocpi/emsp/2.1.1/tariffs/BE/BEC/12", tariff).json()["status_code"] == 1000
    change = {
        "elements": [{"price_components": [{"type": "TIME", "price": 3.0, "step_size": 300}]}],
        "last_updated": "2015-06-30T20:39:09Z",
    }

    patched = bec.patch("/ocpi/emsp/2.1.1/tariffs/BE/BEC/12", change)

    assert patched.json()["status_code"] == 1000, patched.json()
    stored = Tariff.objects.get(tariff_id="12")
    assert stored.data["elements"][0]["price_components"][0]["price"] == 3.0
    assert stored.currency == "EUR" and stored.data["country_code"] == "BE"
    assert bec.patch("/ocpi/emsp/2.2.1/tariffs/BE/BEC/12", change).status_code == 405
    assert bec.patch("/ocpi/emsp/2.1.1/tariffs/BE/BEC/13", change).json()["status_code"] == 2000


@pytest.mark.django_db
def test_a_2_1_1_tariff_patch_keeps_what_2_1_1_cannot_say(client_for: Callable[..., OcpiTestClient]) -> None:
    """Merged over the tariff as we hold it, not over its 2.1.1 read-back: a PATCH of its alt URL had dropped the
    element with a current restriction and the min_price."""
    bec = client_for("BE", "BEC")
    tariff = example(V211, "tariff_simple_2_euro_per_hour")
    tariff["elements"] = [
        {"price_components": [{"type": "ENERGY", "price": 0.50, "step_size": 1}], "restrictions": {"min_current": 32}},
        {"price_components": [{"type": "ENERGY", "price": 0.25, "step_size": 1}]},
    ]
    tariff["min_price"] = {"excl_vat": 5}
    assert bec.put("/ocpi/emsp/2.1.1/tariffs/BE/BEC/12", tariff).json()["status_code"] == 1000
    before = Tariff.objects.get(tariff_id="12").data

    patched = bec.patch("/ocpi/emsp/2.1.1/tariffs/BE/BEC/12", {"tariff_alt_url": "https://x.example/t"})

    assert patched.json()["status_code"] == 1000, patched.json()
    after = Tariff.objects.get(tariff_id="12").data
    assert after["elements"] == before["elements"] and after.get("min_price") == before.get("min_price")
    assert after["tariff_alt_url"] == "https://x.example/t"
