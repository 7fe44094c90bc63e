"""Every console list meets hostile query strings (a NUL in a filter, a search or a page number, absurd
values, unknown orderings) and answers without a server error. Run on PostgreSQL for the full effect: it
refuses a NUL in text, which the admin's list filters pass straight to it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.urls import reverse

pytestmark = pytest.mark.django_db

HOSTILE_QUERIES = ["status__exact=%00", "q=a%00b", "q=" + "x" * 3000, "o=zz", "p=-1", "p=999999999999999999999",
                   "created_at__gte=9999-99-99", "id__exact=99999999999999999999999", "q=%ED%A0%80"]  # fmt: skip


def test_no_console_list_fails_on_a_hostile_query(admin_client: Any) -> None:
    failed = []
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for query in HOSTILE_QUERIES:
            status = admin_client.get(f"{url}?{query}").status_code
            if status >= 500:
                failed.append((url, query, status))
    assert not failed


def test_a_nul_in_a_console_address_is_a_bad_request(admin_client: Any) -> None:
    response = admin_client.get(reverse("admin:emsp_evse_changelist") + "?status__exact=%00")
    assert response.status_code == 400
    assert b"NUL" in response.content
    assert admin_client.get(reverse("admin:emsp_evse_changelist") + "?status__exact=AVAILABLE").status_code == 200
