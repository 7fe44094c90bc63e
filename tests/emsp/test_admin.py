"""Staff console: every page renders; onboarding, Token A, health and message-log search work."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from emsp.models import Partner
from ocpi.models import OcpiMessage
from tests.factories import PartnerFactory, TokenFactory, stored_location
from tests.fakes import FakePeer, envelope
from tests.ocpi.test_credentials import CPO, answer_credentials, script_cpo

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db: None) -> Client:
    user = User.objects.create_superuser("boss", "boss@example.com", "pw-123456-x")
    client = Client()
    client.force_login(user)
    return client


def test_every_admin_list_and_add_page_renders(staff: Client, partner: Partner) -> None:
    stored_location(partner)
    TokenFactory()
    for model in admin.site._registry:
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        assert staff.get(changelist).status_code == 200, changelist
        obj = model.objects.first()
        if obj is not None:
            change = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
            assert staff.get(change).status_code == 200, change


def test_issuing_token_a_shows_it_once(staff: Client) -> None:
    partner = PartnerFactory(state=Partner.State.NEW)
    response = staff.post(
        reverse("admin:emsp_partner_changelist"),
        {"action": "issue_token_a", "_selected_action": [partner.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert "Token A for" in text
    partner.refresh_from_db()
    assert partner.state == Partner.State.TOKEN_A_ISSUED
    assert partner.token_a_hash


def test_registering_with_a_cpo_from_the_console(staff: Client, peer: FakePeer) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", answer_credentials)
    for module in ("locations", "tariffs", "sessions", "cdrs"):
        peer.route("GET", f"{CPO}/2.2.1/{module}", (200, envelope([])))
    response = staff.post(
        reverse("admin:emsp_partner_register"),
        {"versions_url": f"{CPO}/versions", "token_a": "token-a-from-cpo", "pull_now": "on"},
        follow=True,
    )
    text = response.content.decode()
    assert "Registered with" in text
    assert "First pull" in text
    assert 'id="last-syncs"' in text
    assert Partner.objects.get(party_id="CPA").state == Partner.State.CONNECTED


def test_a_refusing_cpo_shows_a_clear_error(staff: Client, peer: FakePeer) -> None:
    response = staff.post(reverse("admin:emsp_partner_register"), {"versions_url": f"{CPO}/versions", "token_a": "bad"})
    assert response.status_code == 200
    assert "Registration failed" in response.content.decode()


def test_health_page_shows_counts_and_syncs(staff: Client, partner: Partner) -> None:
    stored_location(partner, evses=3)
    text = staff.get(reverse("admin:emsp_partner_health", args=[partner.pk])).content.decode()
    assert 'id="object-counts"' in text
    assert "<td>3</td>" in text


def test_message_log_is_searchable_by_request_id(staff: Client, partner: Partner, ocpi: Any) -> None:
    request_id = ocpi.get("/ocpi/versions")["X-Request-ID"]
    OcpiMessage.objects.create(direction="IN", method="GET", url="/other", request_id="other-id")
    text = staff.get(reverse("admin:ocpi_ocpimessage_changelist"), {"q": request_id}).content.decode()
    assert "/ocpi/versions" in text
    assert "/other" not in text
