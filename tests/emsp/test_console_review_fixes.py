"""The console's hostile-input review, fixed: a lookup a list has no filter for is refused (400) on every list,
and a filter value the database refuses goes back to the whole list (?e=1), not a server error; an EVSE's and a
location's OCPI bookkeeping (ids, last_updated, an EVSE's coordinates) is read-only, and a location stays on the
globe; django-axes' clean-up action works; a driver's currency is an ISO 4217 code. Several were server errors on
PostgreSQL only: run them there too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin import FieldListFilter
from django.db import DataError, models, transaction
from django.http import QueryDict
from django.test import Client
from django.urls import reverse

from beckn.models import BecknSubscriber
from billing.services.payments import wallet_top_up
from emsp.models import Driver, Evse, Location
from emsp.services.catalogue import evse_patch_at, locations_store
from tests.billing.factories import CdrFactory
from tests.billing.test_console_hardening import change_form
from tests.emsp.test_console_safeguards import driver_form
from tests.factories import DriverFactory, PartnerFactory, TokenFactory, ocpi_location, stored_location

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999999"


# -- 1. hand-written lookups in a list's address ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/admin/emsp/location/?name__regex=(",
        "/admin/ocpi/ocpimessage/?url__iregex=[",
        "/admin/ocpi/ocpimessage/?request_body__icontains=x",
        "/admin/billing/cdr/?end_date_time__iso_year=0",
        "/admin/billing/cdr/?end_date_time__iso_year=9999",
        "/admin/billing/payment/?created_at__year__gte=10000",
        "/admin/emsp/staffaction/?at__year__lt=" + HUGE,
        "/admin/billing/cdr/?total_cost_excl_vat__gte=1e999999",
        "/admin/emsp/driver/?wallet_balance__exact=1e999999",
        "/admin/billing/payment/?requested_minor__in=" + HUGE + ",1",
        "/admin/emsp/evse/?max_power_w__in=" + HUGE,
        "/admin/emsp/evse/?location__partner__name__regex=(",
    ],
)
def test_a_lookup_a_list_has_no_filter_for_is_a_bad_request(admin_client: Client, url: str) -> None:
    stored_location(PartnerFactory())  # rows for PostgreSQL to meet the regular expression on
    admin_client.raise_request_exception = False

    response = admin_client.get(url)

    assert response.status_code == 400
    assert b"can't be filtered by" in response.content


def console_links() -> list[str]:
    """Every list address the console builds with a query (templates and admin code), for its first rows."""
    partner = PartnerFactory()
    return [
        reverse("admin:emsp_partnerparty_changelist") + f"?partner__id__exact={partner.pk}&own__exact=0",
        reverse("admin:ocpi_dataqualityissue_changelist") + f"?partner__id__exact={partner.pk}",
        reverse("admin:billing_dispute_changelist") + f"?partner__id__exact={partner.pk}",
        reverse("admin:emsp_evse_changelist") + f"?location__partner__id__exact={partner.pk}&status_age=stale",
        reverse("admin:billing_payment_changelist") + "?status__exact=FAILED",
        reverse("admin:billing_payment_changelist") + "?booking__id__exact=1",
        reverse("admin:billing_ledgerentry_changelist") + "?reference__exact=payment%3A1",
        reverse("admin:billing_ledgeraccount_changelist")
        + "?currency__exact=INR&code__startswith=driver%3A&code__endswith=%3Awallet",
        reverse("admin:billing_settlement_changelist") + f"?period=2026-10&partner__id__exact={partner.pk}",
        reverse("admin:billing_cdr_changelist") + "?end_date_time__year=2026&end_date_time__month=10&o=2.-3&p=1",
        reverse("admin:billing_cdr_changelist") + "?q=CDR&all=&_facets=True",
        reverse("admin:emsp_partner_changelist") + "?_popup=1&_to_field=id",
        reverse("admin:emsp_location_changelist") + "?e=1",
    ]


def test_the_links_the_console_builds_to_its_lists_still_work(admin_client: Client) -> None:
    for url in console_links():
        assert admin_client.get(url).status_code == 200, url


def hostile_lookups(field: models.Field) -> dict[str, tuple[str, ...]]:
    """The review's hand-written lookups on a field of this kind, each with its values (a relation: those of
    the key it points at)."""
    if field.is_relation:
        field = field.target_field
    if isinstance(field, models.DecimalField):
        return dict.fromkeys(("exact", "gte", "lt", "in"), ("NaN", "Infinity", "1e999999"))
    if isinstance(field, models.IntegerField):
        return {**dict.fromkeys(("exact", "gt", "lte", "in"), (HUGE,)), "range": (f"1,{HUGE}",)}
    if isinstance(field, models.FloatField):
        return dict.fromkeys(("exact", "gte"), ("1e999999", "NaN"))
    if isinstance(field, models.DateField):
        dates = {"iso_year": ("0", "9999"), "year__gte": ("10000",), "year__lt": (HUGE,), "week": (HUGE,)}
        return dates | ({"date": ("0001-01-01",)} if isinstance(field, models.DateTimeField) else {})
    if isinstance(field, models.JSONField):
        return {"contains": ('{"a": [1, 2]}',), "has_key": ("x" * 5000,)}
    if isinstance(field, (models.CharField, models.TextField)):
        return {"regex": ("(",), "iregex": ("[",), "exact": ("x" * 5000,)}
    return {}


# What a list's filters are given, whatever their kind.
FILTER_VALUES = (HUGE, "-" + HUGE, "abc", "x" * 5000, "1e999999", "NaN", "0001-01-01", "9999-12-31")


def filter_kind(spec: Any, name: str) -> tuple[Any, ...]:
    """Filters of one kind take a value alike: a list filter class of the console's own is a kind of its own,
    Django's field filters are one per class, type of column and parameter (`__exact`, `__isnull`, `__gte`…)."""
    if not isinstance(spec, FieldListFilter):
        return (type(spec),)
    field = spec.field.target_field if spec.field.is_relation else spec.field
    return (type(spec), field.get_internal_type(), name.removeprefix(spec.field_path))


def choice_parameters(spec: Any, changelist: Any) -> Iterator[tuple[str, str]]:
    """A value for each parameter of a list filter, as its choices link to them."""
    for choice in spec.choices(changelist):
        for name, value in QueryDict(choice["query_string"].lstrip("?")).items():
            if name in spec.expected_parameters():
                yield name, value


def console_lists(client: Client) -> Iterator[tuple[str, type[models.Model], Any]]:
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        page = client.get(url)
        assert page.status_code == 200, url
        yield url, model, page.context["cl"]


def test_no_console_list_fails_on_a_hostile_lookup_and_every_filter_of_each_works(admin_client: Client) -> None:
    """Every registered list (a new one too) takes its filters' parameters, as their choices link to them; its
    filters given absurd values, and lookups by hand on each of its columns, are answered without a server error.
    Each value once per kind of filter, and a lookup refused once (400) is not tried with its other values: about
    2,000 requests, most of them refused before the database (6-14 s on PostgreSQL)."""
    partner = PartnerFactory()
    stored_location(partner)
    TokenFactory(driver=DriverFactory())
    CdrFactory(partner=partner)
    admin_client.raise_request_exception = False
    failed: list[tuple[str, Any, Any]] = []

    def status(url: str, query: dict[str, str]) -> int:
        try:
            with transaction.atomic():  # a database error on PostgreSQL must not end the test's transaction
                code = admin_client.get(url, query).status_code
        except Exception as error:  # the savepoint's release, after a database error answered 500
            failed.append((url, query, repr(error)[:200]))
            return 500
        if code >= 500:
            failed.append((url, query, code))
        return code

    kinds_seen: set[tuple[Any, ...]] = set()
    for url, model, changelist in console_lists(admin_client):
        # The list's own links: a value of each of its filters' parameters, from their choices, and its date
        # drill-down, in one address (the parameters are what a refusal would be of).
        own = {name: value for spec in changelist.filter_specs for name, value in choice_parameters(spec, changelist)}
        if changelist.date_hierarchy:
            own |= {
                f"{changelist.date_hierarchy}__{part}": n for part, n in (("year", 2026), ("month", 10), ("day", 7))
            }
        if status(url, own) != 200:
            failed.append((url, own, "the list's own filters are not taken"))
        for spec in changelist.filter_specs:
            for name in spec.expected_parameters():
                if (kind := filter_kind(spec, name)) not in kinds_seen:
                    kinds_seen.add(kind)
                    for value in FILTER_VALUES[:1] if name.endswith("__isnull") else FILTER_VALUES:
                        status(url, {name: value})
        for field in model._meta.concrete_fields:
            for lookup, values in hostile_lookups(field).items():
                for value in values:
                    if status(url, {f"{field.name}__{lookup}": value}) == 400:
                        break
    assert not failed
    assert len(kinds_seen) > 20


def test_a_filter_value_the_database_refuses_lists_all_rows_again(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_location(PartnerFactory())
    url = reverse("admin:emsp_location_changelist")

    def refused(*args: Any, **kwargs: Any) -> None:
        raise DataError("numeric field overflow")  # as PostgreSQL answers a value past its column

    monkeypatch.setattr(admin.ModelAdmin, "get_paginator", refused)
    admin_client.raise_request_exception = False

    response = admin_client.get(url, {"publish__exact": "1"})
    again = admin_client.get(url, {"publish__exact": "1", "e": "1"})
    unfiltered = admin_client.get(url)

    assert (response.status_code, response["Location"]) == (302, url + "?e=1")
    assert again.status_code == 400
    assert unfiltered.status_code == 500  # a list that fails without filters is a fault of ours, and says so


def test_a_refused_filter_in_a_lookup_popup_goes_back_to_the_popup(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A raw-id field's lookup popup whose filter the database refuses lands on the whole list still as the popup,
    choosing for the same field (Django's own `?e=1` drops both, and the popup then opens rows as pages)."""
    stored_location(PartnerFactory())
    url = reverse("admin:emsp_location_changelist")

    def refused(*args: Any, **kwargs: Any) -> None:
        raise DataError("numeric field overflow")

    monkeypatch.setattr(admin.ModelAdmin, "get_paginator", refused)
    admin_client.raise_request_exception = False

    response = admin_client.get(url, {"publish__exact": "1", "_popup": "1", "_to_field": "id"})

    assert response.status_code == 302
    assert QueryDict(response["Location"].partition("?")[2]) == QueryDict("e=1&_popup=1&_to_field=id")


# -- 2. an EVSE's and a location's OCPI bookkeeping ----------------------------------------------------------


def test_an_evse_stamped_in_the_year_9999_in_the_console_still_takes_its_cpos_status(admin_client: Client) -> None:
    partner = PartnerFactory()
    location = stored_location(partner)
    evse = Evse.objects.filter(location=location).order_by("pk").first()
    stamped = evse.last_updated
    url = reverse("admin:emsp_evse_change", args=[evse.pk])

    saved = admin_client.post(url, change_form(admin_client, url, evse.pk, last_updated_0="9999-12-31"))
    result = evse_patch_at(
        partner.country_code,
        partner.party_id,
        location.location_id,
        evse.uid,
        {"status": "CHARGING", "last_updated": "2026-12-07T10:00:00Z"},
    )

    assert saved.status_code == 302
    evse.refresh_from_db()
    assert (result.applied, evse.status) == (True, "CHARGING")
    assert evse.last_updated == datetime(2026, 12, 7, 10, tzinfo=UTC) != stamped


def test_a_location_stamped_in_the_future_in_the_console_still_takes_its_cpos_update(admin_client: Client) -> None:
    partner = PartnerFactory()
    location = stored_location(partner)
    url = reverse("admin:emsp_location_change", args=[location.pk])

    saved = admin_client.post(url, change_form(admin_client, url, location.pk, last_updated_0="9999-12-31"))
    moved = ocpi_location(partner.country_code, partner.party_id, last_updated="2026-12-07T10:00:00Z")
    moved["name"] = "Renamed by the CPO"
    locations_store(partner, [moved])

    assert saved.status_code == 302
    location.refresh_from_db()
    assert location.name == "Renamed by the CPO"


def test_an_evse_key_changed_in_the_console_does_not_split_the_evse_in_two(admin_client: Client) -> None:
    partner = PartnerFactory()
    location = stored_location(partner)
    evse = Evse.objects.filter(location=location).order_by("pk").first()
    url = reverse("admin:emsp_evse_change", args=[evse.pk])
    before = Evse.objects.filter(location=location).count()

    saved = admin_client.post(url, change_form(admin_client, url, evse.pk, uid_key="TYPO", uid="TYPO"))
    locations_store(
        partner, [ocpi_location(partner.country_code, partner.party_id, last_updated="2026-12-07T10:00:00Z")]
    )

    assert saved.status_code == 302
    evse.refresh_from_db()
    assert (evse.uid, evse.uid_key) != ("TYPO", "TYPO")
    assert Evse.objects.filter(location=location).count() == before


def test_a_locations_identity_is_not_changed_in_the_console_and_its_publish_flag_is(admin_client: Client) -> None:
    location = stored_location(PartnerFactory())
    url = reverse("admin:emsp_location_change", args=[location.pk])
    identity = (location.country_code, location.party_id, location.location_id, location.ocpi_key)

    saved = admin_client.post(
        url,
        change_form(admin_client, url, location.pk, country_code="XX", party_id="ZZZ", location_id="OTHER")
        | {"publish": ""},
    )

    assert saved.status_code == 302
    location.refresh_from_db()
    assert (location.country_code, location.party_id, location.location_id, location.ocpi_key) == identity
    assert location.publish is False


@pytest.mark.parametrize("model", ["location", "evse"])
def test_locations_and_evses_are_not_added_in_the_console(admin_client: Client, model: str) -> None:
    admin_client.raise_request_exception = False
    form = {"name": "x", "latitude": "1", "longitude": "1", "time_zone": "UTC", "uid": "X", "status": "AVAILABLE"}
    form |= {"country_code": "IN", "party_id": "CPA", "location_id": "L9", "uid_key": "X", "capabilities": "[]"}
    form |= {"last_updated_0": "2026-12-07", "last_updated_1": "10:00:00", "_save": "Save"}
    form |= {f"{inline}-{count}_FORMS": "0" for inline in ("evses", "connectors") for count in ("TOTAL", "INITIAL")}

    response = admin_client.post(reverse(f"admin:emsp_{model}_add"), form)

    assert response.status_code == 403
    assert not Location.objects.exists() and not Evse.objects.exists()


# -- 3. django-axes' clean-up action ---------------------------------------------------------------------------


def test_cleaning_up_expired_login_attempts_in_the_console(admin_client: Client) -> None:
    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.create(
        username="someone",
        ip_address="127.0.0.1",
        user_agent="ua",
        failures_since_start=1,
        get_data="",
        post_data="",
        http_accept="*/*",
        path_info="/admin/login/",
    )
    AccessAttempt.objects.filter(pk=attempt.pk).update(attempt_time=datetime(2026, 1, 1, tzinfo=UTC))
    fresh = AccessAttempt.objects.create(username="another", ip_address="127.0.0.2", failures_since_start=1)
    admin_client.raise_request_exception = False

    response = admin_client.post(
        "/admin/axes/accessattempt/", {"action": "cleanup_expired_attempts", "_selected_action": [attempt.pk]}
    )

    assert response.status_code == 302
    assert list(AccessAttempt.objects.values_list("pk", flat=True)) == [fresh.pk]  # the expired one only


# -- 4. a driver's currency ------------------------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["ZZZ", "\u200b", "XAU"])
def test_a_drivers_currency_is_an_iso_4217_code_money_is_kept_in(admin_client: Client, currency: str) -> None:
    PartnerFactory()
    driver = DriverFactory()

    response = admin_client.post(
        reverse("admin:emsp_driver_change", args=[driver.pk]), driver_form(admin_client, driver.pk, currency=currency)
    )

    assert response.status_code == 200
    assert "currency" in response.context["adminform"].form.errors
    driver.refresh_from_db()
    assert driver.currency == "INR"


def test_a_drivers_currency_is_saved_upper_case(admin_client: Client) -> None:
    driver = DriverFactory()

    admin_client.post(
        reverse("admin:emsp_driver_change", args=[driver.pk]), driver_form(admin_client, driver.pk, currency=" eur ")
    )

    driver.refresh_from_db()
    assert driver.currency == "EUR"


def test_a_drivers_currency_is_fixed_once_the_ledger_keeps_their_money(admin_client: Client) -> None:
    from decimal import Decimal

    driver = DriverFactory(wallet_balance=Decimal("0"))
    wallet_top_up(driver=driver, amount=Decimal("500"), key="top-up-1")
    url = reverse("admin:emsp_driver_change", args=[driver.pk])

    saved = admin_client.post(url, driver_form(admin_client, driver.pk, currency="EUR"))

    assert saved.status_code == 302
    driver.refresh_from_db()
    assert (driver.currency, driver.wallet_balance) == ("INR", Decimal("500"))


def test_a_drivers_erasure_is_not_set_in_the_console(admin_client: Client) -> None:
    driver = DriverFactory()

    admin_client.post(
        reverse("admin:emsp_driver_change", args=[driver.pk]),
        driver_form(admin_client, driver.pk, erased_at_0="9999-12-31", erased_at_1="00:00:00"),
    )

    assert Driver.objects.get(pk=driver.pk).erased_at is None


# -- 5. coordinates on the globe -------------------------------------------------------------------------------


@pytest.mark.parametrize(("lat", "lon"), [("999", "77.5"), ("-999", "77.5"), ("12.9", "1e308"), ("12.9", "-181")])
def test_a_location_is_kept_on_the_globe(admin_client: Client, lat: str, lon: str) -> None:
    location = stored_location(PartnerFactory())
    url = reverse("admin:emsp_location_change", args=[location.pk])

    response = admin_client.post(url, change_form(admin_client, url, location.pk, latitude=lat, longitude=lon))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors.keys() & {"latitude", "longitude"}
    location.refresh_from_db()
    assert (location.latitude, location.longitude) == (12.971599, 77.594566)


def test_a_location_moved_on_the_globe_in_the_console_is_saved(admin_client: Client) -> None:
    location = stored_location(PartnerFactory())
    url = reverse("admin:emsp_location_change", args=[location.pk])

    admin_client.post(url, change_form(admin_client, url, location.pk, latitude="-90", longitude="180"))

    assert Location.objects.values_list("latitude", "longitude").get(pk=location.pk) == (-90, 180)


def test_a_locations_time_zone_in_the_console_must_be_an_iana_zone(admin_client: Client) -> None:
    location = stored_location(PartnerFactory())
    zone_before = location.time_zone
    url = reverse("admin:emsp_location_change", args=[location.pk])

    response = admin_client.post(url, change_form(admin_client, url, location.pk, time_zone="Europe/Amsterdm"))

    assert response.status_code == 200
    assert "time_zone" in response.context["adminform"].form.errors
    location.refresh_from_db()
    assert location.time_zone == zone_before


def test_a_locations_time_zone_in_the_console_is_spelled_as_the_zone_database_does(admin_client: Client) -> None:
    location = stored_location(PartnerFactory())
    url = reverse("admin:emsp_location_change", args=[location.pk])

    admin_client.post(url, change_form(admin_client, url, location.pk, time_zone=" europe/berlin "))

    location.refresh_from_db()
    assert location.time_zone == "Europe/Berlin"


def test_an_evses_coordinates_are_not_changed_in_the_console(admin_client: Client) -> None:
    evse = Evse.objects.filter(location=stored_location(PartnerFactory())).order_by("pk").first()
    url = reverse("admin:emsp_evse_change", args=[evse.pk])

    admin_client.post(url, change_form(admin_client, url, evse.pk, latitude="999", longitude="1e308"))

    evse.refresh_from_db()
    assert (evse.latitude, evse.longitude) == (12.971599, 77.594566)


# -- also seen: a Beckn subscriber's key valid until before it is valid from ------------------------------------


def test_a_subscribers_key_is_valid_until_after_it_is_valid_from(admin_client: Client) -> None:
    subscriber = BecknSubscriber.objects.create(
        subscriber_id="bap.example.com",
        unique_key_id="k1",
        signing_public_key="awGPjRK6i/Vg/lWr+0xObclVxlwZXvTjWYtlu6NeOHk=",
    )
    url = reverse("admin:beckn_becknsubscriber_change", args=[subscriber.pk])
    form = change_form(
        admin_client,
        url,
        subscriber.pk,
        valid_from_0="2026-12-31",
        valid_from_1="00:00:00",
        valid_until_0="2026-01-01",
        valid_until_1="00:00:00",
    )

    response = admin_client.post(url, form)

    assert response.status_code == 200
    assert "valid_until" in response.context["adminform"].form.errors
    subscriber.refresh_from_db()
    assert subscriber.valid_until is None
