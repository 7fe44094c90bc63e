"""The credentials handshake (credentials.asciidoc), both directions, and our own versions/credentials objects.

(a) We register with a CPO: Token A from the CPO → its versions, the highest version both offer, its details
    → POST our Token B → Token C.
(b) A CPO registers with us: staff issue Token A → the CPO POSTs its Token B to the credentials endpoint of
    the version it chose → we fetch its details of that version with B before answering → we answer with our
    Token C. PUT rotates (either side may start it: `rotate_credentials` is ours), DELETE unregisters.
Each version's Credentials and version details are mapped by ocpi.versions; the partner's version is stored.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, NoReturn

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from emsp.models import Partner, ci_key, hash_token, new_credentials_token
from emsp.services.partners import partner_parties_claimed, party_holder
from emsp.text import CONTROL_CHARACTERS
from ocpi import hub, push, transport, versions
from ocpi.client import OcpiAuthError, OcpiClient, OcpiClientError, OcpiReplyError, encode_token
from ocpi.models import CredentialsRotation, PushDelivery
from ocpi.normalize import Rejected, unwrap_object_payload
from ocpi.redact import redact_tokens, storable
from ocpi.transport import OcpiError, absolute_url, is_printable_token

log = logging.getLogger(__name__)

VERSION = transport.VERSION

# What we implement, exactly (version_information_endpoint.asciidoc: list only implemented modules), in every
# version we speak: the same modules at /ocpi/{version}/credentials and /ocpi/emsp/{version}/{module}.
# Our credentials endpoint is advertised as SENDER ([bf] NOTE: the role of credentials is not meaningful);
# 2.1.1 version details have no roles at all.
OUR_MODULES: list[tuple[str, str, str]] = [
    ("credentials", "SENDER", "/ocpi/{version}/credentials"),
    ("locations", "RECEIVER", "/ocpi/emsp/{version}/locations"),
    ("sessions", "RECEIVER", "/ocpi/emsp/{version}/sessions"),
    ("cdrs", "RECEIVER", "/ocpi/emsp/{version}/cdrs"),
    ("tariffs", "RECEIVER", "/ocpi/emsp/{version}/tariffs"),
    ("tokens", "SENDER", "/ocpi/emsp/{version}/tokens"),
    ("commands", "SENDER", "/ocpi/emsp/{version}/commands"),
]
# Without a Locations sender there is nothing for an eMSP to offer drivers (status code 3003).
REQUIRED_PARTNER_MODULES = {"credentials", "locations"}


class RegistrationError(Exception):
    """Registering with a partner failed; the message says at which step. It is shown to staff and logged, so it
    goes through token redaction (`_redacted`): `known` are the tokens of the exchange, never to appear in it."""

    def __init__(self, message: str, *, known: tuple[str, ...] = ()) -> None:
        super().__init__(_redacted(message, *known))


def _redacted(text: str, *known: str) -> str:
    """An error text for staff and logs without a credentials token: the tokens of the exchange we know (as sent
    and Base64-encoded, as a partner quoting our Authorization header has them), and any `"token": "…"` a quoted
    reply carries, also one the quote cut off (ocpi/redact.py redact_tokens)."""
    for token in known:
        for form in (encode_token(token, True), token) if token else ():
            text = text.replace(form, "[redacted]")
    return storable(redact_tokens(text))


def versions_url() -> str:
    return absolute_url("/ocpi/versions")


def our_versions() -> list[dict[str, str]]:
    return [{"version": v, "url": absolute_url(f"/ocpi/{v}")} for v in sorted(versions.SUPPORTED)]


def our_version_details(version: str = VERSION) -> dict[str, Any]:
    endpoints = []
    for identifier, role, path in OUR_MODULES:
        endpoint = {"identifier": identifier, "role": role, "url": absolute_url(path.format(version=version))}
        if version == "2.1.1":
            del endpoint["role"]  # 2.1.1 Endpoint: identifier and url
        endpoints.append(endpoint)
    return {"version": version, "endpoints": endpoints}


def our_credentials(token: str, version: str = VERSION) -> dict[str, Any]:
    """Our Credentials object in `version`."""
    return versions.downgrade(version, "credentials", _our_credentials(token))


def _our_credentials(token: str) -> dict[str, Any]:
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
    # Endpoints of the partner's version details that were not kept (_endpoints_kept), in words.
    dropped: list[str] = field(default_factory=list)


# More endpoints than any version details need (a dozen modules, each in two roles at most): the rest is not kept.
# partner.endpoints is read on every request the partner makes to us.
MAX_PARTNER_ENDPOINTS = 100
# An endpoint URL as the Credentials `url`: string(255) (credentials.asciidoc), printable ASCII.
MAX_ENDPOINT_URL = 255
# A module identifier or a role: a word (ModuleID, InterfaceRole); anything longer is no endpoint of ours to call.
MAX_ENDPOINT_WORD = 64


def fetch_partner_endpoints(
    versions_url: str, token: str, *, use_base64: bool, partner: Partner | None = None, version: str | None = None
) -> PartnerEndpoints:
    """GET versions, pick `version` (the one the partner registers in) or else the highest version both sides
    offer, GET its details. Tries the other token encoding once when refused: many 2.1.1/2.2
    implementations expect the raw token ([d2] transport NOTE "by trial and error")."""
    try:
        return _fetch_endpoints(OcpiClient(partner, token=token, use_base64=use_base64), versions_url, version)
    except OcpiAuthError:
        client = OcpiClient(partner, token=token, use_base64=not use_base64)
        endpoints = _fetch_endpoints(client, versions_url, version)
        log.info("%s accepts the token only %s", versions_url, "Base64-encoded" if not use_base64 else "raw")
        return endpoints


def _fetch_endpoints(client: OcpiClient, url: str, version: str | None) -> PartnerEndpoints:
    """The partner's version details of `version` (or of the best version both offer), its endpoints as kept
    (`_endpoints_kept`). Only strings are taken of what it sends (a version, a URL): str() of a deeply nested
    value had exhausted Python's stack."""
    reply = client.get(url, module="versions")
    data = reply.data
    if isinstance(data, dict) and "endpoints" in data:
        # A partner that hands out its version-details URL as the "versions" URL.
        details = data
        chosen_version = _text(data.get("version"), number=True)
        if chosen_version not in versions.SUPPORTED or (version and chosen_version != version):
            raise OcpiClientError(f"partner's version details are for OCPI {chosen_version!r}", ocpi_status=3002)
    else:
        offered = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
        by_version = {
            _text(v.get("version"), number=True): _text(v.get("url"))
            for v in offered
            if isinstance(v, dict) and _text(v.get("url"))
        }
        chosen_version = version if version in by_version else None if version else versions.negotiate(by_version)
        if chosen_version is None:
            wanted = version or " / ".join(versions.SUPPORTED)
            offers = sorted(v[:20] for v in by_version)[:20]
            raise OcpiClientError(f"partner offers no OCPI {wanted} (offers {offers})", ocpi_status=3002)
        details_url = by_version[chosen_version]
        try:
            details = unwrap_object_payload(client.get(details_url, module="versions").data)
        except Rejected as exc:
            # `data` not one object (a string, a number, a list of several): an answer, but no version details.
            raise OcpiReplyError(f"GET {details_url}: not version details ({exc})") from exc
        stated = details.get("version")
        if stated not in (None, "") and _text(stated, number=True) != chosen_version:
            # The details at the URL its versions list gives for one version are of another (2.1.1 endpoints,
            # without roles, taken as 2.2.1 ones): refused as the same mismatch is above.
            shown = _text(stated, number=True)[:20] or type(stated).__name__
            raise OcpiClientError(
                f"partner's version details at {details_url[:200]} are for OCPI {shown!r}, not {chosen_version}",
                ocpi_status=3002,
            )
    listed = details.get("endpoints") or []
    if not isinstance(listed, list):
        # version_information_endpoint, *VersionDetails*: endpoints is Endpoint * (a list); 5 or "x" says nothing.
        raise OcpiReplyError(f"version details: endpoints is {type(listed).__name__}, not a list of Endpoint objects")
    endpoints, dropped = _endpoints_kept(listed)
    if dropped:
        log.warning("version details of %s: endpoints not kept: %s", url[:200], "; ".join(dropped))
    return PartnerEndpoints(version=chosen_version, endpoints=endpoints, use_base64=client.use_base64, dropped=dropped)


def _text(value: Any, *, number: bool = False) -> str:
    """A partner's string, stripped; "" for anything else (a list, an object), or also for a number unless
    `number` (a version some partners send as 2.2)."""
    if isinstance(value, str):
        return value.strip()
    if number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


def _endpoints_kept(listed: list[Any]) -> tuple[list[dict[str, str]], list[str]]:
    """The Endpoint objects we keep of version details, and what was left out, in words (the first few, and
    how many more). Kept: a string identifier and role (a word each; no role in 2.1.1) and an http(s) URL of at
    most MAX_ENDPOINT_URL printable characters; the first of each identifier and role (Partner.endpoint_url
    reads the first too); at most MAX_PARTNER_ENDPOINTS. A NUL in what we would keep refuses the details
    (OcpiReplyError): no column holds one, and PostgreSQL refused the partner's save with a 500."""
    kept: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    notes: list[str] = []
    unnoted = repeated = beyond = 0

    def drop(note: str) -> None:
        nonlocal unnoted
        if len(notes) < 10:
            notes.append(note)
        else:
            unnoted += 1

    for index, endpoint in enumerate(listed):
        if not isinstance(endpoint, dict):
            drop(f"endpoints[{index}] is not an Endpoint object")
            continue
        identifier = _text(endpoint.get("identifier")).lower()
        role = _text(endpoint.get("role")).upper()
        url = _text(endpoint.get("url"))
        if any("\x00" in text for text in (identifier, role, url)):
            raise OcpiReplyError(f"version details: endpoints[{index}] holds a NUL character")
        if not identifier or not url:
            drop(f"endpoints[{index}] has no identifier or url string")
        elif len(identifier) > MAX_ENDPOINT_WORD or not transport.is_printable_text(identifier):
            drop(f"endpoints[{index}].identifier is no module name")
        elif len(role) > MAX_ENDPOINT_WORD or not transport.is_printable_text(role):
            drop(f"endpoints[{index}].role ({identifier}) is no role")
        elif not _callable_url(url):
            drop(
                f"endpoints[{index}].url ({identifier}) is not an http(s) URL of at most {MAX_ENDPOINT_URL} printable "
                f"characters: {url[:60]!r}"
            )
        elif (identifier, role) in seen:
            repeated += 1
        elif len(kept) >= MAX_PARTNER_ENDPOINTS:
            beyond += 1
        else:
            seen.add((identifier, role))
            kept.append({"identifier": identifier, "role": role, "url": url})
    if unnoted:
        notes.append(f"{unnoted} more not usable")
    if repeated:
        notes.append(f"{repeated} repeating an identifier and role listed before (the first is kept)")
    if beyond:
        notes.append(f"{beyond} beyond the first {MAX_PARTNER_ENDPOINTS}")
    return kept, notes


def _callable_url(url: str) -> bool:
    """An endpoint URL we may call: http or https with a host, at most MAX_ENDPOINT_URL printable characters and no
    white space (a gopher: or file: URL had been stored, to be refused only when called). Not ASCII only: a 2.2.1
    URL is a string(255), printable UTF-8, and a host may be an international name (outbound.py sends it as IDNA)
    or a path hold a city's name."""
    if len(url) > MAX_ENDPOINT_URL or not url.isprintable() or any(char.isspace() for char in url):
        return False
    scheme, separator, rest = url.partition("://")
    return bool(separator) and scheme.lower() in ("http", "https") and bool(rest.split("/", 1)[0].strip())


def _missing_modules(endpoints: list[dict[str, str]]) -> set[str]:
    return REQUIRED_PARTNER_MODULES - {e["identifier"] for e in endpoints}


def _missing_said(missing: set[str], endpoints: PartnerEndpoints) -> str:
    """The required modules missing from the partner's version details, and the endpoints left out of them (one
    with a URL we would not call may be why)."""
    said = f"{sorted(missing)}"
    return f"{said} (not kept of its version details: {'; '.join(endpoints.dropped)})" if endpoints.dropped else said


# More roles than any platform serves (a hub's parties come through HubClientInfo): refused before any is looked
# at or recorded as a claim.
MAX_CREDENTIALS_ROLES = 1000


def _validate_credentials(body: Any, version: str = VERSION) -> dict[str, Any]:
    """A Credentials object from a partner in `version`: token, url and roles are required
    (credentials.asciidoc; a 2.1.1 party at the top level counts as its one role)."""
    if not isinstance(body, dict):
        raise OcpiError(transport.INVALID_PARAMETERS, "Credentials object expected")
    # What no column holds (a NUL, in a CPO's reply as in a request to us): refused, not a database error on
    # PostgreSQL when the partner's roles are saved.
    transport.check_json(body)
    body = versions.upgrade(version, "credentials", body)
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
    if len(roles) > MAX_CREDENTIALS_ROLES:
        raise OcpiError(transport.INVALID_PARAMETERS, f"roles: more than {MAX_CREDENTIALS_ROLES} CredentialsRoles")
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
    return {"token": token.strip(), "url": url.strip(), "roles": clean_roles, "hub_party_id": body.get("hub_party_id")}


def _apply_connection(
    partner: Partner,
    *,
    endpoints: PartnerEndpoints,
    versions_url: str,
    roles: list[dict[str, Any]],
    their_token: str,
    our_token: str,
    registering: bool,
) -> None:
    """The handshake is done: the partner's token (for our calls) and ours (for its calls) are exchanged.
    `registering` (a POST, ours or the partner's): the pulls start now. A PUT (a token rotation, a version
    switch) leaves them as they are: it had switched a pull staff paused back on."""
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
    if registering:
        partner.next_sync_at = timezone.now()
        partner.sync_enabled = True


# What a credentials POST or PUT to us changes on the partner (_apply_connection, Token A spent), saved as that
# alone: a change staff made while the partner's endpoints were being read (a pull paused) stays.
_CONNECTION_FIELDS = [
    "outgoing_token",
    "incoming_token_hash",
    "versions_url",
    "version",
    "endpoints",
    "outgoing_token_base64",
    "credentials_roles",
    "role",
    "state",
    "registered_at",
    "token_a_hash",
    "updated_at",
]
_PULL_START_FIELDS = ["next_sync_at", "sync_enabled"]


# ---------------------------------------------------------------------------------------------
# (b) the partner registers with us
# ---------------------------------------------------------------------------------------------


def accept_registration(partner: Partner, body: Any, *, used_token_a: bool, version: str = VERSION) -> dict[str, Any]:
    """POST credentials (of `version`): the partner presents Token A and its Token B; answer with our Token C.
    The connection speaks the version of the credentials endpoint posted to (credentials.asciidoc: "A POST
    initiates the registration process for this endpoint's version")."""
    if partner.state == Partner.State.CONNECTED or not used_token_a:
        raise OcpiError(transport.CLIENT_ERROR, "Already registered: use PUT to update", 405)
    token_a_hash = partner.token_a_hash  # the Token A this request was authenticated with
    token_c = _take_credentials(partner, body, version, registering=True)
    partner.token_a_hash = ""  # Token A is single-use (credentials.asciidoc)
    with transaction.atomic():
        # The partner's endpoints were read outside any lock, for as long as the partner took to answer: a
        # second POST with the same Token A (sent twice, or at once) may have registered meanwhile. Token A "MAY
        # no longer be used" after the exchange, and a POST once registered MUST answer 405: saved anyway, this
        # one had answered 1000 with a Token C that the other's save had already replaced (401 on first use).
        current = Partner.objects.select_for_update().filter(pk=partner.pk).first()
        if current is None:  # staff deleted the partner meanwhile: its Token A matches no party now
            raise OcpiError(transport.CLIENT_ERROR, "Missing or unknown token", 401)
        if current.state == Partner.State.CONNECTED:
            raise OcpiError(transport.CLIENT_ERROR, "Already registered: use PUT to update", 405)
        if not token_a_hash or current.token_a_hash != token_a_hash:
            # Staff issued another Token A or unregistered the partner meanwhile: this one matches no party now.
            raise OcpiError(transport.CLIENT_ERROR, "Missing or unknown token", 401)
        partner.save(update_fields=_CONNECTION_FIELDS + _PULL_START_FIELDS)
        push.tokens_to_new_partner(partner)
    log.info("%s registered with us in OCPI %s", partner, partner.version)
    return our_credentials(token_c, version)


def update_registration(partner: Partner, body: Any, *, used_token_a: bool, version: str = VERSION) -> dict[str, Any]:
    """PUT credentials (of `version`): the partner's new token, and the version of this endpoint ("A PUT will
    switch to the version that contains this credentials endpoint"); its endpoints re-fetched with the new
    token; a new Token C for it. Its old token stops working with our answer."""
    if partner.state != Partner.State.CONNECTED or used_token_a:
        raise OcpiError(transport.CLIENT_ERROR, "Not registered: use POST first", 405)
    token_hash = partner.incoming_token_hash  # the connection's token when this request was authenticated
    token_c = _take_credentials(partner, body, version, registering=False)
    with transaction.atomic():
        # As for a POST: another PUT (or our own rotation, or an unregistration) may have changed the tokens
        # while the partner's endpoints were being read. The token this PUT came with is then no longer valid
        # (transport: a token that matches no party is 401), and the Token C it would answer with is dead.
        current = Partner.objects.select_for_update().filter(pk=partner.pk).first()
        if current is None or current.incoming_token_hash != token_hash:
            raise OcpiError(transport.CLIENT_ERROR, "Missing or unknown token", 401)
        if current.state != Partner.State.CONNECTED:
            raise OcpiError(transport.CLIENT_ERROR, "Not registered: use POST first", 405)
        partner.save(update_fields=_CONNECTION_FIELDS)
        _close_pending(partner, CredentialsRotation.Outcome.REFUSED, "superseded by the partner's own PUT")
    log.info("%s updated its credentials (OCPI %s)", partner, partner.version)
    return our_credentials(token_c, version)


def _take_credentials(partner: Partner, body: Any, version: str, *, registering: bool) -> str:
    """Validate the partner's Credentials, read its endpoints with its token, and connect (not saved yet).
    Returns our new Token C."""
    credentials = _validate_credentials(body, version)
    credentials["roles"] = hub.hub_first(credentials["roles"], credentials["hub_party_id"], partner.party_key)
    _refuse_ungranted_parties(partner, credentials["roles"])
    endpoints = _fetch_or_3001(partner, credentials, version)
    token_c = new_credentials_token()
    _apply_connection(
        partner,
        endpoints=endpoints,
        versions_url=credentials["url"],
        roles=credentials["roles"],
        their_token=credentials["token"],
        our_token=token_c,
        registering=registering,
    )
    return token_c


def _refuse_ungranted_parties(partner: Partner, roles: list[dict[str, Any]]) -> None:
    """A partner acts for the parties we granted it, never for those it names (credentials.asciidoc leaves
    the trust to the receiver): any other party is refused with 2001 and recorded for staff to decide on."""
    if roles and roles[0]["role"] == "HUB":
        # A hub lists the parties reachable through it (2.3.0 credentials NOTE): recorded for staff, not refused.
        partner_parties_claimed(partner, hub.announced_parties(roles))
        roles = roles[:1]
    refused = partner_parties_claimed(partner, [(r["country_code"], r["party_id"]) for r in roles])
    if refused:
        named = ", ".join(f"{cc}*{pid}" for cc, pid in refused)
        raise OcpiError(
            transport.INVALID_PARAMETERS,
            f"roles: this connection may not act for {named}; ask the eMSP to grant it, then register again",
        )


def _fetch_or_3001(partner: Partner, credentials: dict[str, Any], version: str) -> PartnerEndpoints:
    try:
        endpoints = fetch_partner_endpoints(
            credentials["url"],
            credentials["token"],
            use_base64=partner.outgoing_token_base64,
            partner=partner,
            version=version,
        )
    except OcpiClientError as exc:
        if exc.ocpi_status == transport.UNSUPPORTED_VERSION:
            raise OcpiError(transport.UNSUPPORTED_VERSION, str(exc)) from exc
        raise OcpiError(transport.UNABLE_TO_USE_CLIENT_API, f"Could not use your versions endpoint: {exc}") from exc
    missing = _missing_modules(endpoints.endpoints)
    if missing:
        raise OcpiError(
            transport.NO_MATCHING_ENDPOINTS, f"Missing required modules: {_missing_said(missing, endpoints)}"
        )
    return endpoints


# How long the console waits for a partner to take our DELETE (a staff action, not a background job).
TELL_TIMEOUT_SECONDS = 10.0


def tell_partner_unregistered(partner: Partner) -> str:
    """Ending a connection ourselves: DELETE at the partner's credentials endpoint with our token, before we
    forget it (credentials.asciidoc, DELETE: "both parties must end any automated communication"; every
    implementation must be able to call this module on the other). What the partner answered, in words: we
    unregister on our side whatever it answers."""
    if partner.state != Partner.State.CONNECTED or not partner.outgoing_token:
        return "not connected: the partner holds no credentials of ours to delete"
    url = partner.endpoint_url("credentials")
    if url is None:
        return "the partner lists no credentials endpoint: it was not told"
    try:
        reply = OcpiClient(partner, timeout=TELL_TIMEOUT_SECONDS).request(
            "DELETE", url, module="credentials", guarded=False
        )
    except OcpiClientError as exc:
        return f"the partner's credentials DELETE failed ({exc}): it may still call us, and is refused"
    return f"the partner took our credentials DELETE (HTTP {reply.http_status}, OCPI {reply.status_code})"


# What an unregistration changes on the partner, saved as that alone (as a rotation saves its tokens).
_UNREGISTER_FIELDS = [
    "state",
    "incoming_token_hash",
    "outgoing_token",
    "token_a_hash",
    "sync_enabled",
    "next_sync_at",
    "updated_at",
]


def unregister(partner: Partner) -> str:
    """DELETE credentials (or our own decision): stop all automated communication with the partner. Returns the
    state it was in, read under the row's lock.

    `partner` may be seconds old: the console's action loads it, then tells the partner over HTTP (up to
    TELL_TIMEOUT_SECONDS), and the partner's own DELETE carries the row its token was checked against. Saved
    whole, it wrote back a party, a name or a pull setting staff saved meanwhile on the partner's page, and
    Partner.save moved the partner's own party back (its objects with it). So the row is locked and re-read, and
    only what unregistering sets is written; `partner` is then the row as saved (copied from it: re-read after
    the commit, a partner deleted in between raised DoesNotExist)."""
    transport.forget_cached_tokens()
    with transaction.atomic():
        current = Partner.objects.select_for_update().filter(pk=partner.pk).first()
        if current is None:  # deleted meanwhile: nothing left to talk to, nothing to write back
            return partner.state
        was = current.state
        current.state = Partner.State.UNREGISTERED
        current.incoming_token_hash = ""
        current.outgoing_token = ""
        current.token_a_hash = ""
        current.sync_enabled = False
        current.next_sync_at = None
        current.save(update_fields=_UNREGISTER_FIELDS)
        PushDelivery.objects.filter(partner=current, status=PushDelivery.Status.PENDING).update(
            status=PushDelivery.Status.FAILED, last_error="partner unregistered"
        )
        _close_pending(current, CredentialsRotation.Outcome.REFUSED, "partner unregistered")
    for column in Partner._meta.concrete_fields:
        setattr(partner, column.attname, getattr(current, column.attname))
    partner.__dict__.pop("_granted_keys", None)  # its parties as cached on the object loaded before
    return was


# ---------------------------------------------------------------------------------------------
# (a) we register with a partner
# ---------------------------------------------------------------------------------------------


def register_with_partner(
    *, versions_url: str, token_a: str, partner: Partner | None = None, name: str = "", party: str = ""
) -> Partner:
    """Register with a CPO that gave us its versions URL and a Token A. Returns the connected partner.
    `party` (CC*PID), when given, is the party we expect the CPO to answer as.

    A failed attempt leaves nothing behind: a row made for it is deleted, and a partner we had keeps the state,
    token and encoding it had (a connected one keeps working with its token: registering again with a CPO
    that still holds us answers 405, credentials.asciidoc §"POST"). The error's text never carries a token."""
    try:
        endpoints = fetch_partner_endpoints(
            versions_url,
            token_a,
            use_base64=partner.outgoing_token_base64 if partner else True,
            partner=partner,
        )
    except OcpiClientError as exc:
        raise RegistrationError(f"cannot read the partner's versions with Token A: {exc}", known=(token_a,)) from exc
    missing = _missing_modules(endpoints.endpoints)
    if missing:
        # credentials.asciidoc: the sender must not POST when the receiver lacks required endpoints.
        raise RegistrationError(f"the partner lacks required modules: {_missing_said(missing, endpoints)}")
    credentials_url = next(e["url"] for e in endpoints.endpoints if e["identifier"] == "credentials")

    # The CPO will call our versions endpoint with Token B before answering, so B must work first.
    token_b = new_credentials_token()
    # Only a row made here is the attempt's own, to delete or merge: a partner passed in may be ZZ*… too (one
    # `ocpi_import` made for a feed), with its locations, tariffs and sessions hanging on it.
    provisional = partner is None
    if partner is None:
        partner = _provisional_partner(name)
    with transaction.atomic():
        # The caller's partner was loaded before its versions were read (HTTP): the row as it is now.
        partner = _locked(partner)
        before = _Before(
            partner.pk,
            provisional,
            partner.state,
            partner.incoming_token_hash,
            partner.outgoing_token_base64,
        )
        if partner.state == Partner.State.UNREGISTERED:
            partner.state = Partner.State.NEW  # registering again: Token B must authenticate while the CPO checks us
        partner.incoming_token_hash = hash_token(token_b)
        partner.outgoing_token_base64 = endpoints.use_base64
        partner.save(update_fields=["state", "incoming_token_hash", "outgoing_token_base64", "updated_at"])

    client = OcpiClient(partner, token=token_a, use_base64=endpoints.use_base64)
    try:
        body = our_credentials(token_b, endpoints.version)
        reply = client.request("POST", credentials_url, module="credentials", json=body)
        answer = _validate_credentials(unwrap_object_payload(reply.data), endpoints.version)
    except (OcpiClientError, OcpiError, Rejected) as exc:
        # Rejected: an OCPI answer whose data is no Credentials object at all (a number, a list of several).
        _undo_registration(before, token_b)
        raise RegistrationError(f"credentials POST refused: {exc}", known=(token_a, token_b)) from exc
    own = (
        party.replace(":", "*").strip().upper()
        if party
        else ("" if partner.country_code == "ZZ" else partner.party_key)
    )
    answer["roles"] = hub.hub_first(answer["roles"], answer["hub_party_id"], own)

    try:
        # One transaction: a save that fails (a value the database refuses) rolls back the party adopted and
        # a merge into the partner staff set up, and the attempt is undone as for a refusal. Saved one by one,
        # the provisional row had stayed renamed to the CPO's party, in state NEW, Token B working.
        with transaction.atomic():
            partner = _adopt_identity(
                partner,
                answer["roles"],
                name=name,
                expected_party=party,
                token_b=token_b,
                provisional=before.provisional,
            )
            partner.token_a_hash = ""
            _apply_connection(
                partner,
                endpoints=endpoints,
                versions_url=versions_url,
                roles=answer["roles"],
                their_token=answer["token"],
                our_token=token_b,
                registering=True,
            )
            partner.save(update_fields=_CONNECTION_FIELDS + _PULL_START_FIELDS)
            push.tokens_to_new_partner(partner)
    except RegistrationError:
        _undo_registration(before, token_b)
        raise
    except DatabaseError as exc:
        _undo_registration(before, token_b)
        log.exception("registering with %s: the CPO's answer could not be stored", versions_url[:200])
        raise RegistrationError(
            f"the CPO took our credentials, but its answer could not be stored ({type(exc).__name__}); nothing "
            "was kept: register again once it is fixed",
            known=(token_a, token_b, answer["token"]),
        ) from exc
    except Exception:  # whatever else failed before the partner was saved connected: nothing of it stays either
        _undo_registration(before, token_b)
        raise
    log.info("registered with %s", partner)
    return partner


def _locked(partner: Partner) -> Partner:
    """`partner` as its row is now, locked to the end of the transaction. A registration reads the CPO's versions
    and POSTs to it (seconds) with the partner loaded before: saved whole, it wrote back a party, name or pull
    setting staff had saved meanwhile on the partner's page (and Partner.save moved its own party back)."""
    current = Partner.objects.select_for_update().filter(pk=partner.pk).first()
    if current is None:
        raise RegistrationError(f"{partner} was deleted while we registered with it")
    return current


def _provisional_partner(name: str) -> Partner:
    # Placeholder party until the partner's answer tells us its country_code/party_id.
    while True:
        party_id = secrets.token_hex(2)[:3].upper()
        if not Partner.objects.filter(country_code="ZZ", party_id=party_id).exists():
            return Partner.objects.create(name=name or "Registering…", country_code="ZZ", party_id=party_id)


@dataclass(frozen=True)
class _Before:
    """What a registration attempt changes on a partner before the CPO answers, as it was: `pk` the row the
    attempt holds Token B on, `provisional` when the attempt made it (ZZ*…), not when a partner passed in has
    a ZZ party (a feed's)."""

    pk: int
    provisional: bool
    state: str
    incoming_token_hash: str
    outgoing_token_base64: bool


def _undo_registration(before: _Before, token_b: str) -> None:
    """The CPO refused us or answered as a party we won't take: nothing of the attempt remains. Token B stops
    working, and the token the partner had works again (a connected partner's calls go on as before).

    Only while the row still holds the attempt's Token B: the POST can take as long as our timeout, and whatever
    changed the partner's token meanwhile stands — staff unregistering it (its tokens revoked) or the partner's
    own credentials PUT with Token B (the Token C we gave it). Put back blindly, a revoked token would work again
    and the token we just gave would not."""
    ours = Partner.objects.filter(pk=before.pk, incoming_token_hash=hash_token(token_b))
    if before.provisional:
        ours.delete()  # a provisional row made for this attempt
    else:
        ours.update(
            state=before.state,
            incoming_token_hash=before.incoming_token_hash,
            outgoing_token_base64=before.outgoing_token_base64,
        )
    transport.forget_cached_tokens()  # Token B of a connected partner may have been cached meanwhile


def _adopt_identity(
    partner: Partner,
    roles: list[dict[str, Any]],
    *,
    name: str,
    token_b: str,
    provisional: bool,
    expected_party: str = "",
) -> Partner:
    """The party the CPO answered as becomes the partner's, if it may: the one staff expected, not a party
    another connection holds. A provisional row merges into a partner staff set up for that party but not
    yet connected; a ZZ partner passed in (a feed's, with its objects) is never merged away, so that answer is
    refused. Further parties it names are recorded for staff, not granted."""
    primary = roles[0]
    country_code, party_id = primary["country_code"], primary["party_id"]
    key = ci_key(country_code, party_id)
    if key == ci_key(settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID):
        # Taken, every request we sent through it would be addressed to ourselves (OCPI-to = OCPI-from).
        raise RegistrationError(f"the partner answered as {key}, which is our own party")
    if expected_party and ci_key(*expected_party.replace(":", "*").partition("*")[::2]) != key:
        raise RegistrationError(f"the CPO answered as {key}, not as the expected {expected_party.upper()}")
    # The CPO's own name for itself: shown in the console and printed in settlement exports and statements,
    # where a control character ("Evil\x0bCPO") made the XLSX export fail. Cut to the column's length.
    business_name = CONTROL_CHARACTERS.sub("", str((primary.get("business_details") or {}).get("name") or "")).strip()
    business_name = business_name[: Partner._meta.get_field("name").max_length].strip()
    partner = _locked(partner)  # its party and name as they are now, not as they were before our POST
    if partner.incoming_token_hash != hash_token(token_b):
        # Staff unregistered it, or the partner's own credentials PUT gave it a Token C, while our POST was out:
        # what they did stands (the undo leaves a row without our Token B alone). Connected anyway, an
        # unregistered partner worked again, and the Token C stopped working.
        raise RegistrationError(f"{partner}: superseded while our POST was out (an unregister or its own PUT)")
    if partner.country_code == "ZZ":
        existing = (
            Partner.objects.select_for_update()
            .filter(country_code=country_code, party_id=party_id)
            .exclude(pk=partner.pk)
            .first()
        )
        holder = party_holder(country_code, party_id)
        if existing is not None and existing.state == Partner.State.CONNECTED:
            raise RegistrationError(f"{key} is the party of {existing}, which is connected: unregister it first")
        if holder is not None and holder != existing:
            raise RegistrationError(f"{key} is granted to {holder}")
        if existing is not None and not provisional:
            # Merged, the row was deleted and its locations, tariffs, sessions and CDRs with it.
            raise RegistrationError(
                f"the CPO answered as {key}, the party of {existing}; {partner} is a partner of its own (its "
                f"objects with it), not merged into it: register {existing} instead"
            )
        if existing is not None:
            existing.incoming_token_hash = partner.incoming_token_hash
            partner.delete()
            partner = existing
        else:
            partner.country_code, partner.party_id = country_code, party_id
        # Through Partner.save's handling of a party: its own party row, the party's objects moved to it.
        partner.save(update_fields=["country_code", "party_id", "incoming_token_hash", "updated_at"])
    elif not partner.owns(country_code, party_id):
        raise RegistrationError(f"the CPO answered as {key}, which is not {partner}'s party")
    partner_parties_claimed(partner, hub.announced_parties(roles))  # a hub's CPOs, never eMSPs or us
    if not partner.name or partner.name == "Registering…":
        partner.name = name or business_name or key
        partner.save(update_fields=["name", "updated_at"])
    return partner


# ---------------------------------------------------------------------------------------------
# we rotate: PUT our new token to the partner's credentials endpoint (credentials.asciidoc §"Updating the
# credentials and resetting the token")
# ---------------------------------------------------------------------------------------------


class RotationError(Exception):
    """Rotating the tokens with a partner failed; the message says what holds now."""


def rotate_credentials(partner: Partner, *, started_by: str = "") -> CredentialsRotation:
    """Give the partner a new token for calling us and take its new token for calling it, by PUT on its
    credentials endpoint of the connection's version. Returns the finished rotation (DONE); raises
    RotationError otherwise.

    The swap is safe: the new token works (next to the old one) from before the PUT is sent, because the
    partner may check our versions with it before it answers; the old one is dropped only when the partner
    answers with a valid Credentials object. A refused PUT (an HTTP 4xx, an OCPI error status) leaves everything
    as it was. A PUT without a usable answer leaves both tokens valid, since the partner may have switched: no
    answer (timeout, connection lost), an HTTP 5xx (a gateway's 502/504 says nothing of what the partner behind
    it did), an answer that is not OCPI (an HTML page, even with HTTP 200), or an OCPI answer without valid
    Credentials. The next rotation, ours or the partner's, settles it."""
    if partner.state != Partner.State.CONNECTED:
        raise RotationError(f"{partner} is not connected: nothing to rotate")
    credentials_url = partner.endpoint_url("credentials")
    if not credentials_url:
        raise RotationError(f"{partner} has no credentials endpoint in its version details")
    new_token = new_credentials_token()
    rotation = CredentialsRotation.objects.create(
        partner=partner, token_hash=hash_token(new_token), started_by=started_by
    )
    version = partner.version or VERSION
    try:
        reply = OcpiClient(partner).request(
            "PUT", credentials_url, module="credentials", json=our_credentials(new_token, version)
        )
        answer = _validate_credentials(unwrap_object_payload(reply.data), version)
    except OcpiReplyError as exc:
        _rotation_unsettled(rotation, f"answered, but not in OCPI: {_redacted(str(exc), new_token)}")
    except OcpiClientError as exc:
        if exc.http_status is None:
            _rotation_unsettled(rotation, f"no answer: {_redacted(str(exc), new_token)}")
        if exc.http_status >= 500:
            _rotation_unsettled(rotation, f"a server error, not a refusal: {_redacted(str(exc), new_token)}")
        _rotation_refused(rotation, _redacted(str(exc), new_token))
    except OcpiError as exc:
        _rotation_unsettled(rotation, f"answered without usable credentials: {exc.message}")
    except Rejected as exc:
        # An OCPI answer whose data is no Credentials object at all (a number, a list of several).
        _rotation_unsettled(rotation, f"answered without usable credentials: {_redacted(str(exc), new_token)}")
    with transaction.atomic():
        partner = Partner.objects.select_for_update().get(pk=partner.pk)
        still_open = CredentialsRotation.objects.filter(pk=rotation.pk, outcome=CredentialsRotation.Outcome.PENDING)
        if partner.state != Partner.State.CONNECTED or not still_open.exists():
            # The partner's own PUT (which closes this rotation) or its DELETE came while our PUT was out: what it
            # did stands. Applied anyway, the Token C its PUT was answered with stopped working, or an
            # unregistered partner held tokens again (and this rotation's token worked once it had a Token A).
            transport.forget_cached_tokens()
            raise RotationError(f"{partner}: superseded while our PUT was out (its own PUT or DELETE); nothing changed")
        partner.outgoing_token = answer["token"]
        partner.incoming_token_hash = rotation.token_hash
        partner.credentials_roles = answer["roles"]
        partner.save(update_fields=["outgoing_token", "incoming_token_hash", "credentials_roles", "updated_at"])
        _close_pending(partner, CredentialsRotation.Outcome.REFUSED, "superseded by a later rotation")
        CredentialsRotation.objects.filter(pk=rotation.pk).update(
            outcome=CredentialsRotation.Outcome.DONE, finished_at=timezone.now(), error=""
        )
    transport.forget_cached_tokens()
    log.info("rotated credentials with %s (OCPI %s)", partner, version)
    rotation.refresh_from_db()
    return rotation


def _rotation_refused(rotation: CredentialsRotation, error: str) -> NoReturn:
    CredentialsRotation.objects.filter(pk=rotation.pk).update(
        outcome=CredentialsRotation.Outcome.REFUSED, finished_at=timezone.now(), error=error[:2000]
    )
    transport.forget_cached_tokens()
    raise RotationError(f"{rotation.partner} refused the new credentials ({error}); the old tokens stay")


def _rotation_unsettled(rotation: CredentialsRotation, error: str) -> NoReturn:
    # It may have taken our new token (and made one for us we never saw): both of ours stay valid.
    CredentialsRotation.objects.filter(pk=rotation.pk).update(error=error[:2000])
    log.warning("credentials PUT to %s unsettled, both our tokens stay valid: %s", rotation.partner, error)
    raise RotationError(
        f"{rotation.partner}: {error}. It may have switched to the new token, so both stay valid until a "
        "rotation succeeds"
    )


def _close_pending(partner: Partner, outcome: str, error: str) -> None:
    """No PENDING rotation token of `partner` authenticates any longer."""
    CredentialsRotation.objects.filter(partner=partner, outcome=CredentialsRotation.Outcome.PENDING).update(
        outcome=outcome, finished_at=timezone.now(), error=error
    )
    transport.forget_cached_tokens()
