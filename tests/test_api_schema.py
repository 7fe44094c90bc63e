"""The OpenAPI schema (/api/schema/, Swagger at /api/docs/): builds without warnings, validates with
openapi-spec-validator, documents every request body, describes the OCPI objects as the spec does (the
official examples validate against it), and offers the OCPI `Token` and Beckn `Signature` schemes."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from jsonschema_path import SchemaPath
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import OpenAPIV30SpecValidator
from referencing.exceptions import Unresolvable

from beckn.openapi import CORE_SPEC
from beckn.parsing import ACTIONS

CORE_COPY = Path(settings.VECTORS_DIR) / "beckn" / "core-1.1.0" / "openapi" / "transaction.yaml"
OCPI_EXAMPLES = Path(settings.VECTORS_DIR) / "ocpi" / "spec-2.2.1"
METHODS = ("get", "put", "patch", "post", "delete")


@cache
def _generated() -> str:
    return json.dumps(SchemaGenerator().get_schema(request=None, public=True))


def schema() -> dict[str, Any]:
    return json.loads(_generated())  # a fresh copy each time: tests may change it


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def _no_network(uri: str) -> Any:
    raise AssertionError(f"the schema refers to {uri}, which this test does not fetch")


def _core_from_local_copy(uri: str) -> Any:
    """The published core 1.1.0 OpenAPI, read from the official copy in shared/vectors (the same file)."""
    assert uri.split("#")[0] == CORE_SPEC, f"unexpected remote reference {uri}"
    return yaml.safe_load(CORE_COPY.read_text())


def validate(document: dict[str, Any], fetch: Any) -> None:
    OpenAPIV30SpecValidator(SchemaPath.from_dict(document, handlers={"http": fetch, "https": fetch})).validate()


def without_remote_refs(node: Any) -> Any:
    """The document as it stands without the web: the references to the core spec left out of each allOf."""
    if isinstance(node, list):
        return [without_remote_refs(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {key: without_remote_refs(value) for key, value in node.items()}
    if isinstance(copy.get("allOf"), list):
        copy["allOf"] = [part for part in copy["allOf"] if not str(part.get("$ref", "")).startswith("http")]
    return copy


def test_the_schema_has_no_warnings_or_errors(tmp_path: Path) -> None:
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    assert "/ocpi/emsp/2.2.1/tokens/{token_uid}/authorize" in text
    assert "ocpi_evse_patch" in text


def test_it_validates_with_openapi_spec_validator_on_its_own() -> None:
    validate(without_remote_refs(schema()), _no_network)


def test_it_validates_with_the_core_spec_references_resolved() -> None:
    if not CORE_COPY.exists():
        pytest.skip(f"official Beckn core 1.1.0 OpenAPI not found at {CORE_COPY}")
    document = schema()
    validate(document, _core_from_local_copy)
    # A pointer into the core spec that leads nowhere is caught (the references are really followed).
    document["components"]["schemas"]["BecknSearchRequest"]["allOf"][-1]["$ref"] = f"{CORE_SPEC}#/paths/~1serch"
    with pytest.raises(Unresolvable):
        validate(document, _core_from_local_copy)


def test_it_documents_a_request_body_for_every_ocpi_write_and_every_beckn_action() -> None:
    document = schema()
    writes = [(m, p, op) for m, p, op in operations(document) if m in ("put", "patch", "post")]
    assert len([p for _, p, _ in writes if p.startswith("/ocpi/")]) == 15
    for method, path, operation in writes:
        body = operation.get("requestBody")
        assert body is not None, f"{method.upper()} {path} has no requestBody"
        media = body["content"]["application/json"]["schema"]
        assert media.get("$ref", "").startswith("#/components/schemas/"), (path, media)
        # Only real-time authorization may come without a body (LocationReferences is optional).
        assert body.get("required", False) is (operation["operationId"] != "ocpi_token_authorize"), path
    for method, _, operation in operations(document):
        if method in ("get", "delete"):
            assert "requestBody" not in operation
    beckn = {p: op for m, p, op in writes if p.startswith("/beckn/")}
    assert set(beckn) == {f"/beckn/{action}" for action in ACTIONS}
    assert beckn["/beckn/confirm"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BecknConfirmRequest"
    }
    put = document["paths"]["/ocpi/emsp/2.2.1/locations/{country_code}/{party_id}/{location_id}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OcpiLocation"}


def test_it_answers_ocpi_in_the_envelope_and_beckn_with_ack() -> None:
    document = schema()
    envelope = document["components"]["schemas"]["OcpiResponse"]
    assert envelope["required"] == ["status_code", "timestamp"]
    assert set(envelope["properties"]) == {"data", "status_code", "status_message", "timestamp"}
    evse = document["paths"]["/ocpi/emsp/2.2.1/locations/{country_code}/{party_id}/{location_id}/{evse_uid}"]
    ok = evse["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["allOf"][0] == {"$ref": "#/components/schemas/OcpiResponse"}
    assert ok["allOf"][1]["properties"]["data"] == {"$ref": "#/components/schemas/OcpiEVSE"}
    ack = document["paths"]["/beckn/search"]["post"]["responses"]
    assert set(ack) >= {"200", "400", "401"}
    assert ack["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BecknAckResponse"}


def test_it_refers_beckn_bodies_to_the_core_1_1_0_schema() -> None:
    components = schema()["components"]["schemas"]
    for action in ACTIONS:
        parts = components[f"Beckn{action.capitalize()}Request"]["allOf"]
        assert parts[0] == {"$ref": "#/components/schemas/BecknRequest"}
        assert parts[-1] == {"$ref": f"{CORE_SPEC}#/paths/~1{action}/post/requestBody/content/application~1json/schema"}
    assert components["BecknRequest"]["required"] == ["context", "message"]
    assert {"domain", "action", "bap_id", "bap_uri", "transaction_id", "message_id"} <= set(
        components["BecknContext"]["required"]
    )


@pytest.mark.parametrize(
    ("component", "required"),
    [
        (
            "OcpiLocation",
            [
                *("country_code", "party_id", "id", "publish", "address", "city", "country", "coordinates"),
                *("time_zone", "last_updated"),
            ],
        ),
        ("OcpiEVSE", ["uid", "status", "connectors", "last_updated"]),
        ("OcpiConnector", ["id", "standard", "format", "power_type", "max_voltage", "max_amperage", "last_updated"]),
        ("OcpiTariff", ["country_code", "party_id", "id", "currency", "elements", "last_updated"]),
        ("OcpiTariffElement", ["price_components"]),
        ("OcpiPriceComponent", ["type", "price", "step_size"]),
        (
            "OcpiSession",
            [
                *("country_code", "party_id", "id", "start_date_time", "kwh", "cdr_token", "auth_method"),
                *("location_id", "evse_uid", "connector_id", "currency", "status", "last_updated"),
            ],
        ),
        (
            "OcpiCDR",
            [
                *("country_code", "party_id", "id", "start_date_time", "end_date_time", "cdr_token", "auth_method"),
                *("cdr_location", "currency", "charging_periods", "total_cost", "total_energy", "total_time"),
                "last_updated",
            ],
        ),
        (
            "OcpiToken",
            ["country_code", "party_id", "uid", "type", "contract_id", "issuer", "valid", "whitelist", "last_updated"],
        ),
        ("OcpiCommandResponse", ["result", "timeout"]),
        ("OcpiCommandResult", ["result"]),
        ("OcpiStartSession", ["response_url", "token", "location_id"]),
        ("OcpiStopSession", ["response_url", "session_id"]),
        ("OcpiReserveNow", ["response_url", "token", "expiry_date", "reservation_id", "location_id"]),
        ("OcpiCancelReservation", ["response_url", "reservation_id"]),
        ("OcpiUnlockConnector", ["response_url", "location_id", "evse_uid", "connector_id"]),
        ("OcpiCredentials", ["token", "url", "roles"]),
        ("OcpiVersionDetails", ["version", "endpoints"]),
        ("OcpiAuthorizationInfo", ["allowed", "token"]),
        ("OcpiLocationReferences", ["location_id"]),
        ("OcpiLocationPatch", ["last_updated"]),
    ],
)
def test_it_describes_the_ocpi_objects_with_their_required_fields(component: str, required: list[str]) -> None:
    assert schema()["components"]["schemas"][component]["required"] == required


def test_it_describes_nested_ocpi_types_as_the_spec_does() -> None:
    components = schema()["components"]["schemas"]
    location = components["OcpiLocation"]["properties"]
    assert location["evses"]["items"] == {"$ref": "#/components/schemas/OcpiEVSE"}
    assert location["id"]["maxLength"] == 36
    assert location["last_updated"]["format"] == "date-time"
    connectors = components["OcpiEVSE"]["properties"]["connectors"]
    assert connectors["minItems"] == 1  # "+": one or more
    assert "CHADEMO" in components["OcpiConnectorType"]["enum"]
    restrictions = components["OcpiTariffElement"]["properties"]["restrictions"]
    assert restrictions["allOf"] == [{"$ref": "#/components/schemas/OcpiTariffRestrictions"}]


def _example(name: str) -> Any:
    fixed = OCPI_EXAMPLES / "release-2.2.1-bugfixes" / name
    return json.loads((fixed if fixed.exists() else OCPI_EXAMPLES / name).read_text())


# Official examples → the component they are an instance of. Known defects of the examples themselves
# (shared/vectors/ocpi/spec-2.2.1/SOURCES.md, tests/ocpi/test_normalize_examples.py) are listed below.
EXAMPLES = {
    "location_example.json": "OcpiLocation",
    "location_example_parking_garage_opening_hours.json": "OcpiLocation",
    "location_example_uc2_destination_charger.json": "OcpiLocation",
    "location_example_uc3_destination_charger_not_published.json": "OcpiLocation",
    "location_example_uc4_limited_visibility.json": "OcpiLocation",
    "location_example_uc5_home_charge_point.json": "OcpiLocation",
    "location_patch_example_location.json": "OcpiLocationPatch",
    "location_patch_example_status.json": "OcpiEVSEPatch",
    "location_patch_example_tariff.json": "OcpiConnectorPatch",
    "location_put_example_add_evse.json": "OcpiEVSE",
    "session_example_1_simple_start.json": "OcpiSession",
    "session_example_2_short_finished.json": "OcpiSession",
    "session_patch_example_charging_period.json": "OcpiSessionPatch",
    "session_patch_example_total_cost.json": "OcpiSessionPatch",
    "cdr_example.json": "OcpiCDR",
    "tariff_1_simple_2hour.json": "OcpiTariff",
    "tariff_4_complex.json": "OcpiTariff",
    "tariff_15_reservation_5_euro_per_hour.json": "OcpiTariff",
    "tariff_put_example.json": "OcpiTariff",
    "tariffrestriction_example_max_power.json": "OcpiTariff",
    "token_example_2_full_rfid.json": "OcpiToken",
    "credentials_example.json": "OcpiCredentials",
    "version_details_example.json": "OcpiVersionDetails",
    "type_displaytext_example.json": "OcpiDisplayText",
}
EXAMPLE_DEFECTS = {
    "location_put_example_add_evse.json",  # connector without power_type, max_voltage …; physical_reference 3
    "tariff_put_example.json",  # no last_updated
}


def test_the_official_ocpi_examples_validate_against_the_components() -> None:
    if not OCPI_EXAMPLES.exists():
        pytest.skip(f"official OCPI 2.2.1 examples not found at {OCPI_EXAMPLES}")
    components = schema()["components"]
    failing = set()
    for name, component in EXAMPLES.items():
        validator = OAS30Validator({"$ref": f"#/components/schemas/{component}", "components": components})
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_example(name))]
        if errors:
            failing.add(name)
        assert bool(errors) is (name in EXAMPLE_DEFECTS), f"{name} as {component}: {errors[:5]}"
    assert failing == EXAMPLE_DEFECTS


def test_a_location_without_coordinates_does_not_validate() -> None:
    if not OCPI_EXAMPLES.exists():
        pytest.skip(f"official OCPI 2.2.1 examples not found at {OCPI_EXAMPLES}")
    location = _example("location_example.json")
    del location["coordinates"]
    location["evses"][0]["status"] = "SLEEPING"
    validator = OAS30Validator({"$ref": "#/components/schemas/OcpiLocation", "components": schema()["components"]})
    messages = sorted(e.message for e in validator.iter_errors(location))
    assert any("'coordinates' is a required property" in m for m in messages)
    assert any("'SLEEPING' is not one of" in m for m in messages)


@pytest.mark.django_db
def test_api_docs_load_their_assets_from_us(admin_client: Client) -> None:
    page = admin_client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page


@pytest.mark.django_db
def test_the_swagger_page_offers_both_schemes_to_authorize(admin_client: Client) -> None:
    page = admin_client.get("/api/docs/")
    assert page.status_code == 200
    # The schema the page loads: SwaggerUIBundle({url: "…"}); its securitySchemes are what Authorize lists.
    found = re.search(r'SwaggerUIBundle\(\{\s*url: "([^"]+)"', page.content.decode())
    assert found is not None
    url = json.loads(f'"{found.group(1)}"')  # escapejs: \u002F → /
    served = admin_client.get(url, {"format": "json"})
    assert served.status_code == 200
    document = json.loads(served.content)
    schemes = document["components"]["securitySchemes"]
    assert schemes["Token"] == {**schemes["Token"], "type": "apiKey", "in": "header", "name": "Authorization"}
    assert schemes["Signature"] == {**schemes["Signature"], "type": "apiKey", "in": "header", "name": "Authorization"}
    assert "Token <base64" in schemes["Token"]["description"]
    assert "keyId=" in schemes["Signature"]["description"]
    # Every OCPI operation asks for the Token, every Beckn action for the Signature.
    for _, path, operation in operations(document):
        expected = "Token" if path.startswith("/ocpi/") else "Signature" if path.startswith("/beckn/") else None
        if expected:
            assert operation.get("security") == [{expected: []}], path
