"""The credentials handshake (credentials.asciidoc), both directions, and our own versions/credentials objects.

(a) We register with a CPO: Token A from the CPO → its versions and details → POST our Token B → Token C.
(b) A CPO registers with us: staff issue Token A → the CPO POSTs its Token B → we fetch its versions and
    details with B before answering → we answer with our Token C. PUT rotates, DELETE unregisters.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from emsp.models import Partner, ci_key, hash_token, new_credentials_token
from emsp.services.partners import partner_parties_claimed, party_holder
from ocpi import push, transport
from ocpi.client import OcpiAuthError, OcpiClient, OcpiClientError
from ocpi.models import PushDelivery
from ocpi.normalize import unwrap_object_payload
from ocpi.transport import OcpiError, absolute_url, is_printable_token

log = logging.getLogger(__name__)

VERSION = transport.VERSION

# What we implement, exactly (version_information_endpoint.asciidoc: list only implemented modules).
# Our credentials endpoint is advertised as SENDER ([bf] NOTE: the role of credentials is not meaningful).
OUR_MODULES: list[tuple[str, str, str]] = [
    ("credentials", "SENDER", "/ocpi/2.2.1/credentials"),
    ("locations", "RECEIVER", "/ocpi/emsp/2.2.1/locations"),
    ("sessions", "RECEIVER", "/ocpi/emsp/2.2.1/sessions"),
    ("cdrs", "RECEIVER", "/ocpi/emsp/2.2.1/cdrs"),
    ("tariffs", "RECEIVER", "/ocpi/emsp/2.2.1/tariffs"),
    ("tokens", "SENDER", "/ocpi/emsp/2.2.1/tokens"),
    ("commands", "SENDER", "/ocpi/emsp/2.2.1/commands"),
]
# Without a Locations sender there is nothing for an eMSP to offer drivers (status code 3003).
REQUIRED_PARTNER_MODULES = {"credentials", "locations"}


class RegistrationError(Exception):
    """Registering with a partner failed; the message says at which step."""


def versions_url() -> str:
    return absolute_url("/ocpi/versions")


def our_versions() -> list[dict[str, str]]:
    return [{"version": VERSION, "url": absolute_url(f"/ocpi/{VERSION}")}]


def our_version_details() -> dict[str, Any]:
    return {
        "version": VERSION,
        "endpoints": [
            {"identifier": identifier, "role": role, "url": absolute_url(path)}
            for identifier, role, path in OUR_MODULES
        ],
    }


def our_credentials(token: str) -> dict[str, Any]:
    business: dict[str, Any] = {"name": settings.OCPI_BUSINESS_NAME}
    if settings.OCPI_BUSINESS_WEBSITE:
        business["website"] = settings.OCPI_BUSINESS_WEBSITE
    return {
        "token": token,
        "url": versions_url(),
        "roles": [
            {
                "role": "EMSP",
                "business_details": business,
                "party_id": settings.OCPI_PARTY_ID,
                "country_code": settings.OCPI_COUNTRY_CODE,
            }
        ],
    }


@dataclass
class PartnerEndpoints:
    version: str
    endpoints: list[dict[str, str]]
    use_base64: bool


def fetch_partner_endpoints(
    versions_url: str, token: str, *, use_base64: bool, partner: Partner | None = None
) -> PartnerEndpoints:
    """GET versions, pick 2.2.1, GET its details. Tries the other token encoding once when refused:
    many 2.1.1/2.2 implementations expect the raw token ([d2] transport NOTE "by trial and error")."""
    try:
        return _fetch_endpoints(OcpiClient(partner, token=token, use_base64=use_base64), versions_url)
    except OcpiAuthError:
        endpoints = _fetch_endpoints(OcpiClient(partner, token=token, use_base64=not use_base64), versions_url)
        log.info("%s accepts the token only %s", versions_url, "Base64-encoded" if not use_base64 else "raw")
        return endpoints


def _fetch_endpoints(client: OcpiClient, url: str) -> PartnerEndpoints:
    reply = client.get(url, module="versions")
    data = reply.data
    if isinstance(data, dict) and "endpoints" in data:
        # A partner that hands out its version-details URL as the "versions" URL.
        details = data
    else:
        versions = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
        chosen = next(
            (v for v in versions if isinstance(v, dict) and str(v.get("version", "")).strip() == VERSION),
            None,
        )
        if chosen is None or not chosen.get("url"):
            offered = [v.get("version") for v in versions if isinstance(v, dict)]
            raise OcpiClientError(f"partner offers no OCPI {VERSION} (offers {offered})", ocpi_status=3002)
        details = unwrap_object_payload(client.get(str(chosen["url"]).strip(), module="versions").data)
    endpoints = []
    for endpoint in details.get("endpoints") or []:
        if not isinstance(endpoint, dict) or not endpoint.get("identifier") or not endpoint.get("url"):
            continue
        endpoints.append(
            {
                "identifier": str(endpoint["identifier"]).strip().lower(),
                "role": str(endpoint.get("role") or "").strip().upper(),
                "url": str(endpoint["url"]).strip(),
            }
        )
    return PartnerEndpoints(version=VERSION, endpoints=endpoints, use_base64=client.use_base64)


def _missing_modules(endpoints: list[dict[str, str]]) -> set[str]:
    return REQUIRED_PARTNER_MODULES - {e["identifier"] for e in endpoints}


def _validate_credentials(body: Any) -> dict[str, Any]:
    """A Credentials object from a partner: token, url and roles are required (credentials.asciidoc)."""
    if not isinstance(body, dict):
        raise OcpiError(transport.INVALID_PARAMETERS, "Credentials object expected")
    token = body.get("token")
    if not isinstance(token, str) or not 1 <= len(token.strip()) <= 64 or not is_printable_token(token.strip()):
        raise OcpiError(transport.INVALID_PARAMETERS, "token: string(64) of printable ASCII required")
    url = body.get("url")
    if not isinstance(url, str) or not url.strip().startswith(("http://", "https://")):
        raise OcpiError(transport.INVALID_PARAMETERS, "url: the partner's versions URL is required")
    if len(url.strip()) > 255 or not transport.is_printable_text(url.strip()):
        raise OcpiError(transport.INVALID_PARAMETERS, "url: at most 255 printable characters")
    roles = body.get("roles")
    if isinstance(roles, dict):
        roles = [roles]
    if not isinstance(roles, list) or not roles:
        raise OcpiError(transport.INVALID_PARAMETERS, "roles: at least one CredentialsRole is required")
    clean_roles = []
    for i, role in enumerate(roles):
        if not isinstance(role, dict) or not role.get("country_code") or not role.get("party_id"):
            raise OcpiError(transport.INVALID_PARAMETERS, f"roles[{i}]: country_code and party_id are required")
        country_code, party_id = str(role["country_code"]).strip(), str(role["party_id"]).strip()
        if not (len(country_code) == 2 and country_code.isascii() and country_code.isalpha()):
            raise OcpiError(transport.INVALID_PARAMETERS, f"roles[{i}].country_code: ISO 3166-1 alpha-2 expected")
        if not (1 <= len(party_id) <= 3 and party_id.isascii() and party_id.isalnum()):
            raise OcpiError(transport.INVALID_PARAMETERS, f"roles[{i}].party_id: CiString(3) expected")
        clean_roles.append(
            {
                "role": str(role.get("role") or "CPO").strip().upper(),
                "country_code": str(role["country_code"]).strip().upper()[:2],
                "party_id": str(role["party_id"]).strip().upper()[:3],
                "business_details": role.get("business_details")
                if isinstance(role.get("business_details"), dict)
                else {},
            }
        )
    return {"token": token.strip(), "url": url.strip(), "roles": clean_roles}


def _apply_connection(
    partner: Partner,
    *,
    endpoints: PartnerEndpoints,
    versions_url: str,
    roles: list[dict[str, Any]],
    their_token: str,
    our_token: str,
) -> None:
    """The handshake is done: the partner's token (for our calls) and ours (for its calls) are exchanged."""
    transport.forget_cached_tokens()  # the partner's token changes: no cached answer for the old one here
    partner.outgoing_token = their_token
    partner.incoming_token_hash = hash_token(our_token)
    partner.versions_url = versions_url
    partner.version = endpoints.version
    partner.endpoints = endpoints.endpoints
    partner.outgoing_token_base64 = endpoints.use_base64
    partner.credentials_roles = roles
    if any(r.get("role") == "HUB" for r in roles):
        partner.role = Partner.Role.HUB
    partner.state = Partner.State.CONNECTED
    partner.registered_at = timezone.now()
    partner.next_sync_at = timezone.now()
    partner.sync_enabled = True


# ---------------------------------------------------------------------------------------------
# (b) the partner registers with us
# ---------------------------------------------------------------------------------------------


def accept_registration(partner: Partner, body: Any, *, used_token_a: bool) -> dict[str, Any]:
    """POST credentials: the partner presents Token A and its Token B; answer with our Token C."""
    if partner.state == Partner.State.CONNECTED or not used_token_a:
        raise OcpiError(transport.CLIENT_ERROR, "Already registered: use PUT to update", 405)
    token_c = _take_credentials(partner, body)
    partner.token_a_hash = ""  # Token A is single-use (credentials.asciidoc)
    with transaction.atomic():
        partner.save()
        push.tokens_to_new_partner(partner)
    log.info("%s registered with us", partner)
    return our_credentials(token_c)


def update_registration(partner: Partner, body: Any, *, used_token_a: bool) -> dict[str, Any]:
    """PUT credentials: new token and possibly a new version; endpoints re-fetched; a new Token C."""
    if partner.state != Partner.State.CONNECTED or used_token_a:
        raise OcpiError(transport.CLIENT_ERROR, "Not registered: use POST first", 405)
    token_c = _take_credentials(partner, body)
    partner.save()
    return our_credentials(token_c)


def _take_credentials(partner: Partner, body: Any) -> str:
    """Validate the partner's Credentials, read its endpoints with its token, and connect (not saved yet).
    Returns our new Token C."""
    credentials = _validate_credentials(body)
    _refuse_ungranted_parties(partner, credentials["roles"])
    endpoints = _fetch_or_3001(partner, credentials)
    token_c = new_credentials_token()
    _apply_connection(
        partner,
        endpoints=endpoints,
        versions_url=credentials["url"],
        roles=credentials["roles"],
        their_token=credentials["token"],
        our_token=token_c,
    )
    return token_c


def _refuse_ungranted_parties(partner: Partner, roles: list[dict[str, Any]]) -> None:
    """A partner acts for the parties we granted it, never for those it names (credentials.asciidoc leaves
    the trust to the receiver): any other party is refused with 2001 and recorded for staff to decide on."""
    refused = partner_parties_claimed(partner, [(r["country_code"], r["party_id"]) for r in roles])
    if refused:
        named = ", ".join(f"{cc}*{pid}" for cc, pid in refused)
        raise OcpiError(
            transport.INVALID_PARAMETERS,
            f"roles: this connection may not act for {named}; ask the eMSP to grant it, then register again",
        )


def _fetch_or_3001(partner: Partner, credentials: dict[str, Any]) -> PartnerEndpoints:
    try:
        endpoints = fetch_partner_endpoints(
            credentials["url"],
            credentials["token"],
            use_base64=partner.outgoing_token_base64,
            partner=partner,
        )
    except OcpiClientError as exc:
        if exc.ocpi_status == transport.UNSUPPORTED_VERSION:
            raise OcpiError(transport.UNSUPPORTED_VERSION, str(exc)) from exc
        raise OcpiError(transport.UNABLE_TO_USE_CLIENT_API, f"Could not use your versions endpoint: {exc}") from exc
    missing = _missing_modules(endpoints.endpoints)
    if missing:
        raise OcpiError(transport.NO_MATCHING_ENDPOINTS, f"Missing required modules: {sorted(missing)}")
    return endpoints


def unregister(partner: Partner) -> None:
    """DELETE credentials (or our own decision): stop all automated communication with the partner."""
    transport.forget_cached_tokens()
    with transaction.atomic():
        partner.state = Partner.State.UNREGISTERED
        partner.incoming_token_hash = ""
        partner.outgoing_token = ""
        partner.token_a_hash = ""
        partner.sync_enabled = False
        partner.next_sync_at = None
        partner.save()
        PushDelivery.objects.filter(partner=partner, status=PushDelivery.Status.PENDING).update(
            status=PushDelivery.Status.FAILED, last_error="partner unregistered"
        )


# ---------------------------------------------------------------------------------------------
# (a) we register with a partner
# ---------------------------------------------------------------------------------------------


def register_with_partner(
    *, versions_url: str, token_a: str, partner: Partner | None = None, name: str = "", party: str = ""
) -> Partner:
    """Register with a CPO that gave us its versions URL and a Token A. Returns the connected partner.
    `party` (CC*PID), when given, is the party we expect the CPO to answer as."""
    try:
        endpoints = fetch_partner_endpoints(
            versions_url,
            token_a,
            use_base64=partner.outgoing_token_base64 if partner else True,
            partner=partner,
        )
    except OcpiClientError as exc:
        raise RegistrationError(f"cannot read the partner's versions with Token A: {exc}") from exc
    missing = _missing_modules(endpoints.endpoints)
    if missing:
        # credentials.asciidoc: the sender must not POST when the receiver lacks required endpoints.
        raise RegistrationError(f"the partner lacks required modules: {sorted(missing)}")
    credentials_url = next(e["url"] for e in endpoints.endpoints if e["identifier"] == "credentials")

    # The CPO will call our versions endpoint with Token B before answering, so B must work first.
    token_b = new_credentials_token()
    if partner is None:
        partner = _provisional_partner(name)
    state_before = partner.state
    if partner.state == Partner.State.UNREGISTERED:
        partner.state = Partner.State.NEW  # registering again: Token B must authenticate while the CPO checks us
    partner.incoming_token_hash = hash_token(token_b)
    partner.outgoing_token_base64 = endpoints.use_base64
    partner.save()

    client = OcpiClient(partner, token=token_a, use_base64=endpoints.use_base64)
    try:
        reply = client.request("POST", credentials_url, module="credentials", json=our_credentials(token_b))
        answer = _validate_credentials(unwrap_object_payload(reply.data))
    except (OcpiClientError, OcpiError) as exc:
        _undo_registration(partner, state_before)
        raise RegistrationError(f"credentials POST refused: {exc}") from exc

    try:
        partner = _adopt_identity(partner, answer["roles"], name=name, expected_party=party)
    except RegistrationError:
        _undo_registration(partner, state_before)
        raise
    partner.token_a_hash = ""
    _apply_connection(
        partner,
        endpoints=endpoints,
        versions_url=versions_url,
        roles=answer["roles"],
        their_token=answer["token"],
        our_token=token_b,
    )
    with transaction.atomic():
        partner.save()
        push.tokens_to_new_partner(partner)
    log.info("registered with %s", partner)
    return partner


def _provisional_partner(name: str) -> Partner:
    # Placeholder party until the partner's answer tells us its country_code/party_id.
    while True:
        party_id = secrets.token_hex(2)[:3].upper()
        if not Partner.objects.filter(country_code="ZZ", party_id=party_id).exists():
            return Partner.objects.create(name=name or "Registering…", country_code="ZZ", party_id=party_id)


def _undo_registration(partner: Partner, state_before: str) -> None:
    """The CPO refused us or answered as a party we won't take: nothing of the attempt remains."""
    if partner.country_code == "ZZ":
        partner.delete()  # a provisional row made for this attempt
        return
    partner.incoming_token_hash = ""
    partner.state = state_before
    partner.save(update_fields=["state", "incoming_token_hash"])


def _adopt_identity(partner: Partner, roles: list[dict[str, Any]], *, name: str, expected_party: str = "") -> Partner:
    """The party the CPO answered as becomes the partner's, if it may: the one staff expected, not a party
    another connection holds. A provisional row merges into a partner staff set up for that party but not
    yet connected. Further parties it names are recorded for staff, not granted."""
    primary = roles[0]
    country_code, party_id = primary["country_code"], primary["party_id"]
    key = ci_key(country_code, party_id)
    if expected_party and ci_key(*expected_party.replace(":", "*").partition("*")[::2]) != key:
        raise RegistrationError(f"the CPO answered as {key}, not as the expected {expected_party.upper()}")
    business_name = str((primary.get("business_details") or {}).get("name") or "").strip()
    if partner.country_code == "ZZ":
        existing = Partner.objects.filter(country_code=country_code, party_id=party_id).exclude(pk=partner.pk).first()
        holder = party_holder(country_code, party_id)
        if existing is not None and existing.state == Partner.State.CONNECTED:
            raise RegistrationError(f"{key} is the party of {existing}, which is connected: unregister it first")
        if holder is not None and holder != existing:
            raise RegistrationError(f"{key} is granted to {holder}")
        if existing is not None:
            existing.incoming_token_hash = partner.incoming_token_hash
            partner.delete()
            partner = existing
        else:
            partner.country_code, partner.party_id = country_code, party_id
    elif not partner.owns(country_code, party_id):
        raise RegistrationError(f"the CPO answered as {key}, which is not {partner}'s party")
    partner.save()
    partner_parties_claimed(partner, [(r["country_code"], r["party_id"]) for r in roles[1:]])
    if not partner.name or partner.name == "Registering…":
        partner.name = name or business_name or key
    return partner
