"""Tariffs receiver: PUT, GET, DELETE on the literal spec paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Tariff
from tests.conftest import OcpiTestClient

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1/tariffs"


@pytest.fixture
def de_all(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("DE", "ALL")


def test_every_official_tariff_example_is_stored(
    de_all: OcpiTestClient, vectors: Any, spec_example: Callable[[str], Any]
) -> None:
    names = sorted(p.name for p in (vectors / "ocpi" / "spec-2.2.1").glob("tariff_*.json") if "expected" not in p.name)
    assert len(names) >= 18
    for name in names:
        tariff = spec_example(name)
        response = de_all.put(f"{BASE}/DE/ALL/{tariff['id']}", tariff)
        assert response.json()["status_code"] == 1000, (name, response.json())
    assert Tariff.objects.count() == len({spec_example(n)["id"] for n in names})


def test_put_then_get_then_delete(de_all: OcpiTestClient, spec_example: Callable[[str], Any]) -> None:
    tariff = spec_example("tariff_4_complex.json")
    assert de_all.put(f"{BASE}/DE/ALL/{tariff['id']}", tariff).status_code == 201
    got = de_all.get(f"{BASE}/DE/ALL/{tariff['id']}").json()["data"]
    assert got["id"] == tariff["id"]
    assert len(got["elements"]) == len(tariff["elements"])
    assert de_all.delete(f"{BASE}/DE/ALL/{tariff['id']}").json()["status_code"] == 1000
    assert de_all.get(f"{BASE}/DE/ALL/{tariff['id']}").status_code == 404


def test_a_tariff_without_elements_is_2001(de_all: OcpiTestClient, spec_example: Callable[[str], Any]) -> None:
    tariff = {**spec_example("tariff_8_simple_025kwh.json"), "elements": "none"}
    response = de_all.put(f"{BASE}/DE/ALL/{tariff['id']}", tariff)
    assert response.json()["status_code"] == 2001
    assert not Tariff.objects.exists()


def test_another_party_cannot_delete_a_tariff(
    de_all: OcpiTestClient, client_for: Callable[..., OcpiTestClient], spec_example: Callable[[str], Any]
) -> None:
    tariff = spec_example("tariff_8_simple_025kwh.json")
    de_all.put(f"{BASE}/DE/ALL/{tariff['id']}", tariff)
    assert client_for("NL", "XXX").delete(f"{BASE}/DE/ALL/{tariff['id']}").status_code == 404
    assert Tariff.objects.count() == 1
