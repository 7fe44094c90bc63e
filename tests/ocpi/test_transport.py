"""OCPI transport rules: versions, envelope, authentication, ids, routing headers, bad input."""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import pytest
from django.test import override_settings
from django.urls import resolve

from emsp.models import hash_token
from ocpi.models import OcpiMessage
from tests.conftest import CPO_TOKEN, OcpiTestClient
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


def test_it_lists_versions_with_our_public_base_url(ocpi: OcpiTestClient) -> None:
    with override_settings(PUBLIC_BASE_URL="https://emsp.example.com"):
        response = ocpi.get("/ocpi/versions")
    body = response.json()
    assert response.status_code == 200
    assert body["status_code"] == 1000
    assert body["data"] == [
        {"version": v, "url": f"https://emsp.example.com/ocpi/{v}"} for v in ("2.1.1", "2.2.1", "2.3.0")
    ]
    assert body["timestamp"].endswith("Z")


def test_version_details_list_exactly_the_modules_we_implement(ocpi: OcpiTestClient) -> None:
    body = ocpi.get("/ocpi/2.2.1").json()
    endpoints = {(e["identifier"], e["role"]) for e in body["data"]["endpoints"]}
    assert body["data"]["version"] == "2.2.1"
    assert endpoints == {
        ("credentials", "SENDER"),
        ("locations", "RECEIVER"),
        ("sessions", "RECEIVER"),
        ("cdrs", "RECEIVER"),
        ("tariffs", "RECEIVER"),
        ("tokens", "SENDER"),
        ("commands", "SENDER"),
    }


def test_every_advertised_endpoint_is_routed(ocpi: OcpiTestClient) -> None:
    suffix = {
        "credentials": "",
        "tokens": "",
        "commands": "/START_SESSION/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "cdrs": "",
    }
    for endpoint in ocpi.get("/ocpi/2.2.1").json()["data"]["endpoints"]:
        path = urlsplit(endpoint["url"]).path + suffix.get(endpoint["identifier"], "/IN/CPA/X1")
        assert resolve(path).url_name, path


def test_it_answers_401_with_an_envelope_without_a_token(anonymous: OcpiTestClient, partner: object) -> None:
    response = anonymous.get("/ocpi/versions")
    assert response.status_code == 401
    assert response.json()["status_code"] == 2000


def test_it_answers_401_for_an_unknown_token(partner: object) -> None:
    response = OcpiTestClient("not-a-token").get("/ocpi/emsp/2.2.1/tokens")
    assert response.status_code == 401


def test_it_accepts_a_raw_token_as_well_as_base64(partner: object) -> None:
    assert OcpiTestClient(CPO_TOKEN, encode=False).get("/ocpi/emsp/2.2.1/tokens").status_code == 200
    assert OcpiTestClient(CPO_TOKEN, encode=True).get("/ocpi/emsp/2.2.1/tokens").status_code == 200


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_it_accepts_a_token_base64_encoded_with_a_line_break_as_the_spec_examples_are(
    partner: object, ending: str
) -> None:
    # transport_and_format: "ZXhhbXBsZS10b2tlbgo=" is "example-token" and the line break `echo` adds.
    assert base64.b64decode("ZXhhbXBsZS10b2tlbgo=") == b"example-token\n"
    encoded = base64.b64encode((CPO_TOKEN + ending).encode()).decode()
    assert OcpiTestClient(encoded, encode=False).get("/ocpi/emsp/2.2.1/tokens").status_code == 200
    encoded = base64.b64encode((CPO_TOKEN + "\n\n").encode()).decode()  # a token of its own, not ours
    assert OcpiTestClient(encoded, encode=False).get("/ocpi/emsp/2.2.1/tokens").status_code == 401


def test_token_a_only_opens_versions_and_credentials(db: None) -> None:
    partner = PartnerFactory(state="TOKEN_A_ISSUED")
    token_a = partner.issue_token_a()
    partner.save()
    client = OcpiTestClient(token_a)
    assert client.get("/ocpi/versions").status_code == 200
    assert client.get("/ocpi/2.2.1").status_code == 200
    assert client.get("/ocpi/emsp/2.2.1/tokens").status_code == 401


def test_it_echoes_request_and_correlation_ids(ocpi: OcpiTestClient) -> None:
    response = ocpi.get("/ocpi/versions", headers={"X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"})
    assert response["X-Request-ID"] == "req-1"
    assert response["X-Correlation-ID"] == "corr-1"


def test_it_generates_ids_when_missing_and_logs_them(ocpi: OcpiTestClient) -> None:
    response = ocpi.get("/ocpi/versions")
    assert len(response["X-Request-ID"]) == 36
    assert response["X-Correlation-ID"] == response["X-Request-ID"]
    message = OcpiMessage.objects.get(request_id=response["X-Request-ID"])
    assert message.direction == "IN"
    assert message.http_status == 200
    assert message.ocpi_status == 1000


def test_functional_modules_carry_routing_headers_but_versions_do_not(ocpi: OcpiTestClient) -> None:
    tokens = ocpi.get("/ocpi/emsp/2.2.1/tokens", headers={"OCPI-from-country-code": "IN", "OCPI-from-party-id": "CPA"})
    assert tokens["OCPI-to-country-code"] == "IN"
    assert tokens["OCPI-to-party-id"] == "CPA"
    assert tokens["OCPI-from-country-code"] == "IN"
    assert tokens["OCPI-from-party-id"] == "EMS"
    assert "OCPI-to-party-id" not in ocpi.get("/ocpi/versions")


def test_invalid_json_is_http_400_with_an_envelope(ocpi: OcpiTestClient) -> None:
    response = ocpi.put("/ocpi/emsp/2.2.1/tariffs/IN/CPA/T1", raw=b"{not json")
    assert response.status_code == 400
    assert response.json()["status_code"] == 2000


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_an_oversized_body_is_refused_with_413(ocpi: OcpiTestClient) -> None:
    response = ocpi.put("/ocpi/emsp/2.2.1/tariffs/IN/CPA/T1", raw=b'{"x": "' + b"a" * 4096 + b'"}')
    assert response.status_code == 413
    assert response.json()["status_code"] == 2000


def test_unregistered_partners_token_is_refused(db: None) -> None:
    PartnerFactory(party_id="OLD", state="UNREGISTERED", incoming_token_hash=hash_token("old-token"))
    assert OcpiTestClient("old-token").get("/ocpi/versions").status_code == 401


def test_authorization_header_without_token_scheme_is_refused(partner: object) -> None:
    client = OcpiTestClient(None)
    client.headers["Authorization"] = "Bearer " + base64.b64encode(CPO_TOKEN.encode()).decode()
    assert client.get("/ocpi/versions").status_code == 401


def _log_row(url: str) -> None:
    from ocpi.transport import log_message_row

    log_message_row(
        partner_id=None, direction="IN", method="PATCH", url=url, module="locations", http_status=200,
        ocpi_status=1000, request_id="r", correlation_id="c", duration_ms=1, request_body="{}", response_body="{}",
    )  # fmt: skip


def _synchronous_commit() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_log_row_alone_commits_asynchronously_and_the_setting_ends_with_it() -> None:
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("asynchronous commit is PostgreSQL's")
    seen: list[str] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        _log_row("/alone")
        assert _synchronous_commit() == "on"  # the next transaction waits for its commit as always
        with transaction.atomic():  # inside a business transaction the row commits with it, as it does
            _log_row("/inside")
            assert _synchronous_commit() == "on"
    assert "set_config('synchronous_commit', 'off', true)" in seen[0]
    assert "set_config" not in seen[2]
    assert set(OcpiMessage.objects.values_list("url", flat=True)) == {"/alone", "/inside"}


def test_the_message_log_carries_only_the_indexes_its_searches_use() -> None:
    """Every OCPI request inserts a log row, and each index is paid on every insert. The ids are searched by
    exact match only, so they carry no LIKE (`varchar_pattern_ops`) index; the database holds what the model
    declares (its Meta indexes and created_at's) and nothing more."""
    from django.db import connection

    table = OcpiMessage._meta.db_table
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    indexes = {name: info["columns"] for name, info in constraints.items() if info["index"] and not info["primary_key"]}
    declared = {index.name for index in OcpiMessage._meta.indexes}
    assert declared <= indexes.keys()
    assert [indexes[name] for name in indexes.keys() - declared] == [["created_at"]]
    assert {"request_id", "correlation_id"} <= {columns[0] for columns in indexes.values()}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [table])
            assert not [d for (d,) in cursor.fetchall() if "pattern_ops" in d]


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "application/json", "*/*"])
def test_the_answer_is_json_whatever_the_accept_header_asks(ocpi: OcpiTestClient, accept: str) -> None:
    # Lenient in: a client asking only for HTML or XML still gets its OCPI answer (DRF answered HTTP 406).
    response = ocpi.get("/ocpi/versions", headers={"Accept": accept})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["status_code"] == 1000
