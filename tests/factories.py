"""factory-boy factories for the domain models."""

from __future__ import annotations

import factory
from django.utils import timezone

from emsp.models import Driver, Location, Partner, Token


def base36_party_id(n: int) -> str:
    """A distinct three-character party id for each of the first 46,656 partners a test run makes."""
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(digits[(n // 36**i) % 36] for i in (2, 1, 0))


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner
        django_get_or_create = ("country_code", "party_id")

    name = factory.Sequence(lambda n: f"CPO {n}")
    country_code = "IN"
    party_id = factory.Sequence(lambda n: base36_party_id(n))
    role = Partner.Role.CPO
    state = Partner.State.CONNECTED
    outgoing_token = factory.Sequence(lambda n: f"token-we-send-{n}")
    versions_url = "http://127.0.0.1:9/ocpi/versions"
    version = "2.2.1"
    endpoints = factory.LazyAttribute(
        lambda p: [
            {"identifier": m, "role": r, "url": f"http://127.0.0.1:9/ocpi/cpo/2.2.1/{m}"}
            for m, r in [
                ("credentials", "RECEIVER"),
                ("locations", "SENDER"),
                ("tariffs", "SENDER"),
                ("sessions", "SENDER"),
                ("cdrs", "SENDER"),
                ("tokens", "RECEIVER"),
                ("commands", "RECEIVER"),
            ]
        ]
    )


class DriverFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Driver

    name = factory.Faker("name")
    email = factory.Faker("email")


class TokenFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Token

    driver = factory.SubFactory(DriverFactory)
    uid = factory.Sequence(lambda n: f"TOKEN{n:06d}")
    type = Token.Type.RFID
    contract_id = factory.Sequence(lambda n: f"IN-EMS-C{n:08d}")
    issuer = "Open eMSP"
    last_updated = factory.LazyFunction(timezone.now)


def ocpi_location(
    country_code: str = "IN",
    party_id: str = "CPA",
    location_id: str = "LOC1",
    *,
    evses: int = 2,
    latitude: float = 12.971599,
    longitude: float = 77.594566,
    capabilities: list[str] | None = None,
    status: str = "AVAILABLE",
    tariff_ids: list[str] | None = None,
    last_updated: str = "2026-01-01T00:00:00Z",
) -> dict[str, object]:
    """A spec-valid OCPI 2.2.1 Location with `evses` EVSEs of one CCS2 connector each."""
    return {
        "country_code": country_code,
        "party_id": party_id,
        "id": location_id,
        "publish": True,
        "name": f"Station {location_id}",
        "address": "1 MG Road",
        "city": "Bengaluru",
        "postal_code": "560001",
        "country": "IND",
        "coordinates": {"latitude": f"{latitude:.6f}", "longitude": f"{longitude:.6f}"},
        "time_zone": "Asia/Kolkata",
        "evses": [
            {
                "uid": f"{location_id}-E{i}",
                "evse_id": f"{country_code}*{party_id}*E{location_id}{i}",
                "status": status,
                "capabilities": capabilities
                if capabilities is not None
                else ["RESERVABLE", "REMOTE_START_STOP_CAPABLE"],
                "connectors": [
                    {
                        "id": "1",
                        "standard": "IEC_62196_T2_COMBO",
                        "format": "CABLE",
                        "power_type": "DC",
                        "max_voltage": 500,
                        "max_amperage": 120,
                        "max_electric_power": 60000,
                        "tariff_ids": tariff_ids if tariff_ids is not None else ["T1"],
                        "last_updated": last_updated,
                    }
                ],
                "last_updated": last_updated,
            }
            for i in range(1, evses + 1)
        ],
        "last_updated": last_updated,
    }


def stored_location(partner: Partner, **kwargs: object) -> Location:
    from emsp.services.catalogue import locations_store

    location = ocpi_location(partner.country_code, partner.party_id, **kwargs)  # type: ignore[arg-type]
    locations_store(partner, [location])
    return Location.objects.get(location_id=location["id"], partner=partner)
