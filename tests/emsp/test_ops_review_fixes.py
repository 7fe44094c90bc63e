"""The operations review's findings, each reproduced: retention ages charging records by when we stored them
(emsp/privacy.py, billing/privacy.py); production refuses to start without REDIS_URL whatever the broker
(emsp/safe_defaults.py); a partner's OCPI status_code is a bounded metrics label (ocpi/metrics.py); /readyz
measures the beat's heartbeat by the database's clock (emsp/beat.py, emsp/probes.py); log redaction masks every
`*_token`/`*_secret` name and lower-case schemes (emsp/logs.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing.models import Cdr, CdrAudit, Dispute, DriverReceipt
from emsp import privacy
from emsp.beat import beat_heartbeat_write, beat_heartbeats_prune, new_beat_id
from emsp.logs import redact, redact_text
from emsp.models import BeatHeartbeat, ChargingSession, Partner
from emsp.probes import check_beat
from emsp.safe_defaults import production_problems
from ocpi import metrics as ocpi_metrics
from ocpi.client import OcpiClient, OcpiClientError
from tests.billing.factories import CdrAuditFactory, CdrFactory, CreditCdrFactory, DisputeFactory, DriverReceiptFactory
from tests.conftest import OcpiTestClient
from tests.fakes import FakePeer, envelope
from tests.test_safe_defaults import SAFE, SAFE_ENV, load_settings

pytestmark = pytest.mark.django_db

CDRS = "/ocpi/emsp/2.2.1/cdrs"
SESSIONS = "/ocpi/emsp/2.2.1/sessions"
CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"
NOW = timezone.now()
PAST_RETENTION = NOW - timedelta(days=9 * 366)  # older than the 8 × 366 days charging records are kept
RECENT = NOW - timedelta(days=1)


def old_cdr(**kwargs: Any) -> Cdr:
    """A CDR stored longer ago than its retention (and charged then)."""
    return CdrFactory(received_at=PAST_RETENTION, end_date_time=PAST_RETENTION, **kwargs)


# --- 1. retention ages charging records by when we stored them ----------------------------------------------


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


def test_a_cdr_stored_now_with_the_spec_examples_2015_dates_is_kept_with_its_audit_dispute_and_receipt(
    bec: OcpiTestClient, spec_example: Callable[[str], Any]
) -> None:
    cdr = spec_example("cdr_example.json")
    assert cdr["end_date_time"].startswith("2015")
    assert bec.post(CDRS, cdr).status_code == 201
    stored = Cdr.objects.get()
    CdrAuditFactory(cdr=stored)
    dispute = DisputeFactory(cdr=stored)
    receipt = DriverReceiptFactory(cdr=stored)

    counts = privacy.purge_expired()

    assert counts["billing.cdrs"] == 0
    assert Cdr.objects.filter(pk=stored.pk).exists()
    assert CdrAudit.objects.filter(cdr=stored).exists()
    assert Dispute.objects.filter(pk=dispute.pk, state=Dispute.State.OPEN).exists()
    assert DriverReceipt.objects.filter(pk=receipt.pk).exists()
    retry = bec.post(CDRS, cdr)  # the CPO's retry is still a retry, not a new CDR
    assert (retry.status_code, retry.json()["status_code"]) == (200, 1000)
    assert Cdr.objects.count() == 1


def test_a_session_put_now_with_the_spec_examples_2015_dates_is_kept(
    bec: OcpiTestClient, spec_example: Callable[[str], Any]
) -> None:
    session = spec_example("session_example_2_short_finished.json")
    assert session["last_updated"].startswith("2015")
    assert bec.put(f"{SESSIONS}/BE/BEC/{session['id']}", session).status_code == 201

    counts = privacy.purge_expired()

    assert counts["domain.charging_sessions"] == 0
    assert ChargingSession.objects.filter(session_id=session["id"]).exists()


def test_charging_records_go_once_stored_longer_than_their_retention(partner: Partner) -> None:
    gone, kept = old_cdr(), CdrFactory(received_at=RECENT)
    CdrAuditFactory(cdr=gone)
    DriverReceiptFactory(cdr=gone)
    DisputeFactory(cdr=gone, state=Dispute.State.CREDITED)  # settled: no reason to keep it
    session = ChargingSession.objects.create(
        partner=partner, country_code="IN", party_id="CPA", session_id="S1", ocpi_key="in*cpa*s1",
        start_date_time=NOW, currency="INR", last_updated=NOW, data={},
    )  # fmt: skip
    ChargingSession.objects.filter(pk=session.pk).update(received_at=PAST_RETENTION)
    DriverReceipt.objects.filter(cdr=gone).update(created_at=PAST_RETENTION)

    counts = privacy.purge_expired(NOW, kinds=["charging_records"])

    assert list(Cdr.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not DriverReceipt.objects.filter(cdr_id=gone.pk).exists() and not Dispute.objects.exists()
    assert not ChargingSession.objects.exists()
    assert (counts["billing.cdrs"], counts["domain.charging_sessions"]) == (1, 1)


@pytest.mark.parametrize("state", [Dispute.State.OPEN, Dispute.State.CONTESTED])
def test_a_cdr_with_a_dispute_still_open_is_never_purged(state: str) -> None:
    cdr = old_cdr()
    CdrAuditFactory(cdr=cdr)
    DisputeFactory(cdr=cdr, state=state)
    assert privacy.purge_expired(NOW, kinds=["charging_records"])["billing.cdrs"] == 0
    assert Cdr.objects.filter(pk=cdr.pk).exists()


def test_a_receipt_made_within_the_period_keeps_its_cdr_and_a_kept_credit_keeps_the_cdr_it_corrects() -> None:
    receipted = old_cdr()
    DriverReceiptFactory(cdr=receipted)  # made now: a tax document, kept its full term from its own date
    corrected = old_cdr()
    credit = CreditCdrFactory(credited_cdr=corrected, received_at=RECENT)
    assert privacy.purge_expired(NOW, kinds=["charging_records"])["billing.cdrs"] == 0
    assert set(Cdr.objects.values_list("pk", flat=True)) == {receipted.pk, corrected.pk, credit.pk}


def test_the_session_table_indexes_received_at_for_retention_in_place_of_last_updated() -> None:
    """emsp/0027: the index retention reads moved with it, so a PATCH writes no more index entries than before."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, ChargingSession._meta.db_table)
    single = [info["columns"] for info in constraints.values() if info["index"] and not info["primary_key"]]
    assert ["received_at"] in single
    assert ["last_updated"] not in single


# --- 2. production refuses to start without REDIS_URL, whatever the broker ------------------------------------


def test_it_names_redis_url_when_the_broker_is_rabbitmq_and_redis_url_is_unset() -> None:
    problems = production_problems(**{**SAFE, "broker_url": "amqp://emsp:pw@rabbit:5672/emsp", "redis_url": ""})  # type: ignore[arg-type]
    assert len(problems) == 1 and problems[0].startswith("REDIS_URL is unset")
    assert production_problems(**{**SAFE, "redis_url": "redis://redis.internal:6379/0"}) == []  # type: ignore[arg-type]
    # No broker at all: one line naming REDIS_URL, not two.
    nothing = production_problems(**{**SAFE, "broker_url": "filesystem://", "redis_url": ""})  # type: ignore[arg-type]
    assert len(nothing) == 1 and nothing[0].startswith("REDIS_URL")


def test_production_settings_refuse_to_start_on_rabbitmq_without_redis_url() -> None:
    rabbit = {**SAFE_ENV, "DJANGO_ENV": "production", "CELERY_BROKER_URL": "amqp://emsp:pw@127.0.0.1:5672/emsp"}
    refused = load_settings({**rabbit, "REDIS_URL": ""})
    assert refused.returncode != 0
    assert "Refusing to start with unsafe production settings" in refused.stderr
    assert "REDIS_URL is unset" in refused.stderr
    started = load_settings(rabbit)
    assert started.returncode == 0, started.stderr


# --- 3. a partner's OCPI status_code is a bounded label -----------------------------------------------------


def ocpi_status_values(module: str) -> set[str]:
    return {
        sample.labels["ocpi_status"]
        for family in ocpi_metrics.OCPI_REQUESTS.collect()
        for sample in family.samples
        if sample.labels.get("module") == module and sample.name.endswith("_total")
    }


def test_fifty_status_codes_from_a_partner_make_a_handful_of_series(partner: Partner, peer: FakePeer) -> None:
    module = "cardinality-test"
    for n in range(50):
        peer.route("GET", f"{CPO}/tariffs/{n}", (200, envelope([], status_code=2005 + n)))
        with pytest.raises(OcpiClientError):  # not 1000: refused, and counted
            OcpiClient(partner).get(f"{CPO}/tariffs/{n}", module=module)
    for code in (1000, 2001, 3003, 4003, 1999, 3999, 4999, 5000, 0, -7, 10**12):
        ocpi_metrics.count_request(direction="OUT", partner=partner, module=module, http_status=200, ocpi_status=code)
    assert ocpi_status_values(module) == {"2xxx", "1000", "2001", "3003", "4003", "1xxx", "3xxx", "4xxx", "other"}


def test_http_statuses_are_bounded_too() -> None:
    labels = {ocpi_metrics.http_status_label(s) for s in (200, 404, 429, 503, 299, 418, 599, 600, 99, None)}
    assert labels == {"200", "404", "429", "503", "2xx", "4xx", "5xx", "other", "none"}
    assert ocpi_metrics.ocpi_status_label(None) == "none"


# --- 4. /readyz ages the beat's heartbeat by the database's clock --------------------------------------------


def test_a_heartbeat_from_the_future_is_not_fresh_and_says_clock_skew() -> None:
    ahead = timezone.now() + timedelta(minutes=10)
    beat_heartbeat_write(beat_id=new_beat_id(), started_at=ahead, now=ahead)
    check = check_beat()
    assert check["ok"] is False
    assert "clock skew" in check["error"] and check["clock_skew_seconds"] > 590
    assert check["beats_alive"] == 0
    response = Client().get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["beat"]["ok"] is False


def test_a_beat_host_whose_clock_runs_ahead_writes_the_databases_time() -> None:
    with time_machine.travel(timezone.now() + timedelta(minutes=10), tick=True):
        beat_heartbeat_write(beat_id=new_beat_id(), started_at=timezone.now())
    check = check_beat()
    assert check["ok"] is True, check
    assert -5 <= check["age_seconds"] <= 5 and check["beats_alive"] == 1
    # A beat that stopped a minute ago (by the database's clock) is seen as stopped, whatever its host's clock said.
    BeatHeartbeat.objects.update(seen_at=timezone.now() - timedelta(seconds=120))
    assert check_beat()["ok"] is False


def test_a_live_beat_is_counted_beside_an_old_row_from_the_future() -> None:
    ahead = timezone.now() + timedelta(minutes=10)
    beat_heartbeat_write(beat_id="skewed:1:aaaa", started_at=ahead, now=ahead)
    beat_heartbeat_write(beat_id=new_beat_id(), started_at=timezone.now())
    check = check_beat()
    assert check["ok"] is True, check
    assert check["beats_alive"] == 1 and check["clock_skew_seconds"] > 590
    assert beat_heartbeats_prune() == 0  # by the database's clock too: neither row is a day old


# --- 5. redaction: every *_token and *_secret name, lower-case schemes -------------------------------------------

SECRET = "c2VjcmV0LWNwby10b2tlbg=="


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"partner row outgoing_token={SECRET}", "partner row outgoing_token=[redacted]"),
        (f'{{"incoming_token": "{SECRET}"}}', '{"incoming_token": "[redacted]"}'),
        (f"authorization: token {SECRET}", "authorization: token [redacted]"),
        (f"Authorization: Token {SECRET}", "Authorization: Token [redacted]"),
        (f"AUTHORIZATION: BEARER {SECRET}", "AUTHORIZATION: BEARER [redacted]"),
        ("authorization: token plainlowercase", "authorization: [redacted]"),
        ("X-Auth-Token: abc123456", "X-Auth-Token: [redacted]"),
        ("x-api-key: k-1234567 and webhook_secret=whs-9", "x-api-key: [redacted] and webhook_secret=[redacted]"),
    ],
)
def test_it_masks_any_token_or_secret_name_and_schemes_in_any_case(text: str, masked: str) -> None:
    assert redact_text(text) == masked
    assert SECRET not in redact_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "OCPI tokens push to IN*CPA failed",
        "token pushed to CPA, basic charging tariff applied",
        "PUT http://127.0.0.1:9/ocpi/cpo/2.2.1/tokens/IN/EMS/TOKEN000001 -> 200 in 12 ms",
        "token_uid=TOKEN000001 tokens=3 party_key=IN*CPA ocpi_key=in*cpa*loc1",
    ],
)
def test_it_leaves_ordinary_words_and_identifiers_alone(text: str) -> None:
    assert redact_text(text) == text


def test_it_masks_values_under_any_token_or_secret_key() -> None:
    masked = redact({"outgoing_token": "c2VjcmV0", "X-Incoming-Token": "t", "client_secret": "s", "tokens": 3})
    assert masked == {"outgoing_token": "[redacted]", "X-Incoming-Token": "[redacted]", "client_secret": "[redacted]",
                      "tokens": 3}  # fmt: skip
    assert redact({"token_uid": "T1", "party_key": "IN*CPA"}) == {"token_uid": "T1", "party_key": "IN*CPA"}


def test_a_long_run_of_url_or_address_characters_is_redacted_in_linear_time() -> None:
    """The URL-credentials and e-mail patterns were tried at every character of such a run, each attempt reading
    to its end: 100 kB of `a-a-a-…` took over a minute."""
    for text in ("a-" * 50_000, "x." * 50_000, "a" * 100_000 + "@"):
        started = time.monotonic()
        redact_text(text)
        assert time.monotonic() - started < 2
