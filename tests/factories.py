"""factory-boy factories for the domain models."""

from __future__ import annotations

import factory
from django.utils import timezone

from emsp.models import Driver, Partner, Token


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner
        django_get_or_create = ("country_code", "party_id")

    name = factory.Sequence(lambda n: f"CPO {n}")
    country_code = "IN"
    party_id = factory.Sequence(lambda n: f"C{n:02d}"[:3])
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
