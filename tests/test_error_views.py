"""A request that matches no URL, or fails outside a view: below /ocpi/ an OCPI envelope, a Beckn NACK for a
BAP's POST below /beckn/, Django's page for a person (emsp/error_views.py; Django uses them with DEBUG off)."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import get_resolver, path

from emsp import error_views

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(settings: Any) -> Client:
    settings.DEBUG = False
    return Client(raise_request_exception=False)


@pytest.mark.parametrize(
    "url",
    [
        "/ocpi/emsp/2.2.1/nothing/here",
        "/ocpi/emsp/2.2.1/cdrs/BE/BEC",  # a CDR's URL without its id
        "/ocpi/9.9.9",
        "/ocpi/emsp/2.2.1/tokens/UID/authorize/more",
    ],
)
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_an_ocpi_path_we_do_not_serve_is_an_ocpi_404(client: Client, url: str, method: str) -> None:
    response = client.generic(method.upper(), url, "{}", content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status_code"] == 2000 and body["timestamp"] and "data" not in body


def test_a_bap_post_to_a_beckn_path_we_do_not_serve_is_a_nack(client: Client) -> None:
    response = client.post("/beckn/search/extra", "{}", content_type="application/json")
    assert response.status_code == 404
    assert response.json()["message"] == {"ack": {"status": "NACK"}}
    assert response.json()["error"]["code"] == "40001"


@pytest.mark.parametrize("url", ["/beckn/track/ORD/extra", "/nothing-here"])
def test_a_person_gets_the_html_page(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def _fails(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a failure outside any OCPI or Beckn view")


urlpatterns = [path("ocpi/fails", _fails), path("beckn/fails", _fails), path("fails", _fails)]
handler500 = "emsp.error_views.server_error"


@override_settings(ROOT_URLCONF=__name__)
def test_a_failure_outside_a_view_is_answered_in_the_protocol(client: Client) -> None:
    ocpi = client.post("/ocpi/fails")
    assert (ocpi.status_code, ocpi.json()["status_code"]) == (500, 3000)
    beckn = client.post("/beckn/fails")
    assert (beckn.status_code, beckn.json()["message"]["ack"]["status"]) == (500, "NACK")
    assert client.get("/fails")["Content-Type"].startswith("text/html")


def test_the_platform_urls_use_these_handlers() -> None:
    resolver = get_resolver("emsp.urls")
    assert resolver.resolve_error_handler(404) is error_views.not_found
    assert resolver.resolve_error_handler(500) is error_views.server_error
