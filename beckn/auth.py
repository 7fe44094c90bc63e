"""Authenticating an incoming Beckn request (BECKN-006 "Verifying the Authorization header"): the sender's
`Authorization` and, when a gateway forwarded it, the BG's `X-Gateway-Authorization`, on the raw body."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings

from beckn import metrics, registry
from beckn.models import BecknSubscriber
from beckn.parsing import MAX_ID_LENGTH
from beckn.signing import (
    SIGNED_HEADERS,
    SignatureError,
    SignatureHeader,
    check_algorithm,
    check_window,
    parse_signature_header,
    verify_signature,
)

log = logging.getLogger(__name__)

AUTHORIZATION = "Authorization"
GATEWAY_AUTHORIZATION = "X-Gateway-Authorization"


@dataclass(frozen=True)
class VerifiedSender:
    subscriber_id: str
    unique_key_id: str
    gateway_id: str | None  # the BG that forwarded the request, when it carried X-Gateway-Authorization
    subscriber_url: str = ""  # the sender's registered URL: where its callbacks go
    # The registered URL of the very gateway key that signed X-Gateway-Authorization ("" when none is registered,
    # or no gateway): where the answer to a search it forwarded goes (beckn-notes §4.2). Taken from the key that
    # verified, not looked up again by subscriber_id, which could pick a stale or unsubscribed row of the BG.
    gateway_url: str = ""


class BecknAuthError(Exception):
    """Answer with HTTP 401, `header_name: header_value` and a NACK (BECKN-006 "Verification" step 5/8)."""

    def __init__(self, reason: str, header_name: str, header_value: str, *, signature_header: str, detail: str):
        super().__init__(f"{signature_header}: {reason}: {detail}")
        self.reason = reason
        self.header_name = header_name  # WWW-Authenticate, or Proxy-Authenticate for the gateway's signature
        self.header_value = header_value
        self.signature_header = signature_header  # which of our request headers failed
        self.detail = detail
        # Every challenge due: a forwarded request whose gateway signature also failed gets Proxy-Authenticate
        # next to WWW-Authenticate.
        self.challenges: dict[str, str] = {header_name: header_value}


def challenge() -> str:
    """The value of WWW-Authenticate / Proxy-Authenticate (BECKN-006)."""
    return f'Signature realm="{settings.BECKN_SUBSCRIBER_ID}",headers="{SIGNED_HEADERS}"'


def verify_beckn_request(
    body: bytes, headers: Mapping[str, str], *, bap_id: str | None, now: int | None = None
) -> VerifiedSender:
    """Verify the signatures of a request whose raw body is `body`; raises BecknAuthError.

    `bap_id` is the request's `context.bap_id`: when given, the keyId's subscriber must be it (beckn-onix
    does the same for a BPP), so one network participant cannot speak for another. Pass None only where the
    context carries no bap_id (the caller decides whether that is acceptable)."""
    now = int(time.time()) if now is None else now
    skew = settings.BECKN_SIGNATURE_SKEW_SECONDS
    gateway_value = _header(headers, GATEWAY_AUTHORIZATION)
    try:
        sender, key = _verify_one(body, _header(headers, AUTHORIZATION), now=now, skew=skew, bap_id=bap_id)
    except BecknAuthError as exc:
        if gateway_value is not None:
            try:
                _verify_one(body, gateway_value, now=now, skew=skew, gateway=True)
            except BecknAuthError as gateway_exc:
                exc.challenges.update(gateway_exc.challenges)
        raise
    gateway_id, gateway_url = None, ""
    if gateway_value is not None:
        gateway_header, gateway_key = _verify_one(body, gateway_value, now=now, skew=skew, gateway=True)
        gateway_id, gateway_url = gateway_header.subscriber_id, gateway_key.subscriber_url
    return VerifiedSender(sender.subscriber_id, sender.unique_key_id, gateway_id, key.subscriber_url, gateway_url)


def _verify_one(
    body: bytes, value: str | None, *, now: int, skew: int, bap_id: str | None = None, gateway: bool = False
) -> tuple[SignatureHeader, registry.SubscriberKey]:
    try:
        header = parse_signature_header(value)
        # Cheap checks before any registry call: a stale, mislabelled or misattributed header costs no lookup.
        check_algorithm(header)
        check_window(header, now=now, skew=skew)
        # A signature valid for years is a replayable credential: the window must be short (ONDC: minutes).
        if header.expires - header.created > settings.BECKN_SIGNATURE_MAX_VALIDITY_SECONDS:
            raise SignatureError(
                "validity_too_long",
                f"expires - created is {header.expires - header.created} s, over "
                f"{settings.BECKN_SIGNATURE_MAX_VALIDITY_SECONDS} s",
            )
        if bap_id is not None and header.subscriber_id != bap_id:
            # The bap_id cut to an id's length: the detail is logged, and masking 256 kB of it cost seconds.
            shown = bap_id if len(bap_id) <= MAX_ID_LENGTH else f"{bap_id[:MAX_ID_LENGTH]}…"
            raise SignatureError("subscriber_mismatch", f"keyId subscriber {header.subscriber_id} is not {shown}")
        found = registry.lookup(header.subscriber_id, header.unique_key_id)
        if found is None:
            # Looked up again on failure: the key may have been registered since the last (cached) answer.
            found = registry.lookup(header.subscriber_id, header.unique_key_id, refresh=True)
        key = _checked(found, header, gateway)
        try:
            verify_signature(body, header, key.signing_public_key, now=now, skew=skew)
        except SignatureError as exc:
            if exc.reason not in ("bad_signature", "bad_key"):
                raise
            # The sender may have rotated its key since we cached the old one.
            fresh = registry.lookup(header.subscriber_id, header.unique_key_id, refresh=True)
            if fresh is None or fresh.signing_public_key == key.signing_public_key:
                raise
            key = _checked(fresh, header, gateway)
            verify_signature(body, header, key.signing_public_key, now=now, skew=skew)
    except SignatureError as exc:
        raise _error(exc.reason, gateway, str(exc)) from exc
    except registry.LookupBudgetSpent as exc:  # a key nobody knows, in a stream of them: the registry is spared
        raise _error("lookup_budget_spent", gateway, str(exc)) from exc
    return header, key


def _checked(key: registry.SubscriberKey | None, header: SignatureHeader, gateway: bool) -> registry.SubscriberKey:
    if key is None:
        raise SignatureError("unknown_key", f"no usable key for {header.key_id}")
    if gateway and key.type != BecknSubscriber.Type.BG:
        raise SignatureError("not_a_gateway", f"{header.subscriber_id} is not a known gateway (BG)")
    return key


def _error(reason: str, gateway: bool, detail: str) -> BecknAuthError:
    signature_header = GATEWAY_AUTHORIZATION if gateway else AUTHORIZATION
    metrics.count_signature_failure(signature_header, reason)
    log.info("Beckn request refused: %s %s (%s)", signature_header, reason, detail)
    return BecknAuthError(
        reason,
        "Proxy-Authenticate" if gateway else "WWW-Authenticate",
        challenge(),
        signature_header=signature_header,
        detail=detail,
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive, for plain dicts as well as Django's request.headers."""
    value = headers.get(name)
    if value is None and type(headers) is dict:  # Django's HttpHeaders and the ACK lane's mapping ignore case
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value
