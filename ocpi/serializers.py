"""OpenAPI descriptions of the OCPI 2.2.1 wire objects we serve and accept (for /api/schema/ and /api/docs/).

Bodies are parsed and validated by ocpi.normalize, not by these serializers: they document the contract.
Large CPO objects (Location, Session, CDR, Tariff) are described by their identifying fields; the full
field lists are in the OCPI 2.2.1 specification (mod_locations, mod_sessions, mod_cdrs, mod_tariffs).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from ocpi.enums import COMMAND_RESULT_TYPES

STATUS_HELP = "OCPI status code: 1000 success, 2xxx client error, 3xxx server error (status_codes.asciidoc)."


_ENVELOPES: dict[str, serializers.Serializer] = {}


def envelope(name: str, data: Any = None) -> serializers.Serializer:
    """The OCPI response envelope (transport §"Response format") around `data`; one component per name."""
    if name in _ENVELOPES:
        return _ENVELOPES[name]
    fields: dict[str, Any] = {
        "status_code": serializers.IntegerField(help_text=STATUS_HELP),
        "status_message": serializers.CharField(required=False),
        "timestamp": serializers.DateTimeField(),
    }
    if data is not None:
        fields["data"] = data
    _ENVELOPES[name] = inline_serializer(name=name, fields=fields)
    return _ENVELOPES[name]


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(envelope("OcpiErrorResponse"), description=description)


class OcpiVersionSerializer(serializers.Serializer):
    version = serializers.CharField()
    url = serializers.URLField()


class OcpiEndpointSerializer(serializers.Serializer):
    identifier = serializers.CharField(help_text="ModuleID, e.g. locations")
    role = serializers.ChoiceField(choices=["SENDER", "RECEIVER"])
    url = serializers.URLField()


class OcpiVersionDetailsSerializer(serializers.Serializer):
    version = serializers.CharField()
    endpoints = OcpiEndpointSerializer(many=True)


class OcpiBusinessDetailsSerializer(serializers.Serializer):
    name = serializers.CharField()
    website = serializers.URLField(required=False)


class OcpiCredentialsRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP"])
    business_details = OcpiBusinessDetailsSerializer()
    party_id = serializers.CharField(max_length=3)
    country_code = serializers.CharField(max_length=2)


class OcpiCredentialsSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=64)
    url = serializers.URLField(help_text="The versions URL of the party these credentials belong to.")
    roles = OcpiCredentialsRoleSerializer(many=True)


class OcpiTokenSerializer(serializers.Serializer):
    country_code = serializers.CharField(max_length=2)
    party_id = serializers.CharField(max_length=3)
    uid = serializers.CharField(max_length=36)
    type = serializers.ChoiceField(choices=["AD_HOC_USER", "APP_USER", "OTHER", "RFID"])
    contract_id = serializers.CharField(max_length=36)
    visual_number = serializers.CharField(required=False)
    issuer = serializers.CharField(max_length=64)
    group_id = serializers.CharField(required=False)
    valid = serializers.BooleanField()
    whitelist = serializers.ChoiceField(choices=["ALWAYS", "ALLOWED", "ALLOWED_OFFLINE", "NEVER"])
    language = serializers.CharField(required=False)
    last_updated = serializers.DateTimeField()


class OcpiLocationReferencesSerializer(serializers.Serializer):
    location_id = serializers.CharField(max_length=36)
    evse_uids = serializers.ListField(child=serializers.CharField(max_length=36), required=False)


class OcpiAuthorizationInfoSerializer(serializers.Serializer):
    allowed = serializers.ChoiceField(choices=["ALLOWED", "BLOCKED", "EXPIRED", "NO_CREDIT", "NOT_ALLOWED"])
    token = OcpiTokenSerializer()
    location = OcpiLocationReferencesSerializer(required=False)
    authorization_reference = serializers.CharField(required=False)


class OcpiDisplayTextSerializer(serializers.Serializer):
    language = serializers.CharField(max_length=2)
    text = serializers.CharField(max_length=512)


class OcpiCommandResultSerializer(serializers.Serializer):
    result = serializers.ChoiceField(choices=sorted(COMMAND_RESULT_TYPES))
    message = OcpiDisplayTextSerializer(many=True, required=False)


def ocpi_object(name: str, spec: str, id_field: str = "id") -> serializers.Serializer:
    """A CPO-owned OCPI object, described by its identifying fields (the rest: see `spec`)."""
    fields: dict[str, Any] = {
        "country_code": serializers.CharField(max_length=2),
        "party_id": serializers.CharField(max_length=3),
        id_field: serializers.CharField(max_length=39 if name == "OcpiCdr" else 36),
        "last_updated": serializers.DateTimeField(),
    }
    serializer = inline_serializer(name=name, fields=fields)
    serializer.help_text = f"OCPI 2.2.1 {spec}; other fields as the specification defines them."
    return serializer


LOCATION = ocpi_object("OcpiLocation", "Location object (mod_locations)")
SESSION = ocpi_object("OcpiSession", "Session object (mod_sessions)")
CDR = ocpi_object("OcpiCdr", "CDR object (mod_cdrs)")
TARIFF = ocpi_object("OcpiTariff", "Tariff object (mod_tariffs)")
EVSE = inline_serializer(
    name="OcpiEvse",
    fields={
        "uid": serializers.CharField(max_length=36),
        "status": serializers.CharField(),
        "last_updated": serializers.DateTimeField(),
    },
)
CONNECTOR = inline_serializer(
    name="OcpiConnector",
    fields={
        "id": serializers.CharField(max_length=36),
        "standard": serializers.CharField(),
        "last_updated": serializers.DateTimeField(),
    },
)
PATCH_BODY = inline_serializer(
    name="OcpiPatch",
    fields={"last_updated": serializers.DateTimeField(help_text="Required on every PATCH (else 2001).")},
)

PAGINATION_PARAMETERS = [
    OpenApiParameter("date_from", type=str, location=OpenApiParameter.QUERY, description="RFC 3339, inclusive"),
    OpenApiParameter("date_to", type=str, location=OpenApiParameter.QUERY, description="RFC 3339, exclusive"),
    OpenApiParameter("offset", type=int, location=OpenApiParameter.QUERY),
    OpenApiParameter("limit", type=int, location=OpenApiParameter.QUERY, description="capped by X-Limit"),
]
