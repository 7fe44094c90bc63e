"""OCPI's part of personal data (emsp/privacy.py): the message log holds bodies that name a driver's tokens
(our token pushes, sessions, CDRs); on erasure those bodies go, and the whole log goes with its retention,
as do pull runs and data-quality findings."""

from __future__ import annotations

from django.db import connection
from django.db.models import BooleanField, Case, ExpressionWrapper, Q, Value, When
from django.db.models.expressions import RawSQL

from emsp import privacy
from emsp.models import Driver
from ocpi.models import DataQualityIssue, OcpiMessage, PushDelivery, SyncRun

# How a JSON text may write a character of a string besides itself (RFC 8259 §7): '"' and '\\' only escaped,
# '/' and the control characters also so; any character also as \uXXXX (UTF-16 code units).
_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _literal(text: str) -> str:
    """`text` as a regular expression that PostgreSQL (`~*`, an ARE) and SQLite (Django's REGEXP, Python's re)
    both read as that very text: ASCII letters and digits as they are, other ASCII characters after a backslash
    (a literal in both), the rest as they are (special in neither)."""
    return "".join(c if c.isalnum() or not c.isascii() else "\\" + c for c in text)


def _either(forms: set[str]) -> str:
    return "(?:" + "|".join(sorted(forms)) + ")"


def _in_json(uid: str) -> str:
    """The uid as a JSON text may write it in a string, ignoring case."""
    pattern = ""
    for c in uid:
        forms = set()
        for variant in {c, c.lower(), c.upper()}:
            if c == "/" or variant not in _JSON_ESCAPES:
                forms.add(_literal(variant))
            if variant in _JSON_ESCAPES:
                forms.add(_literal(_JSON_ESCAPES[variant]))
            units = variant.encode("utf-16-be")
            forms.add("".join(_literal("\\u") + units[i : i + 2].hex() for i in range(0, len(units), 2)))
        pattern += _either(forms)
    return pattern


def _in_url(uid: str) -> str:
    """The uid as a URL's path may write it, ignoring case: each character as it is or percent-encoded (we
    push to {tokens}/{country}/{party}/{uid} quoted; a request's path is logged as Django escapes it)."""
    pattern = ""
    for c in uid:
        forms = set()
        for variant in {c, c.lower(), c.upper()}:
            forms.add(_literal(variant))
            forms.add("".join(_literal("%") + f"{byte:02x}" for byte in variant.encode()))
        pattern += _either(forms)
    return pattern


def _naming(uids: list[str]) -> Q:
    """Log rows that name one of the token uids: as a whole JSON string in a body (an OCPI Token's, CdrToken's
    or AuthorizationInfo's uid; not a uid that merely holds it, as 04A1B2C3D4 holds 04A1B2C3), or as a whole
    segment of the URL (POST {tokens}/{uid}/authorize, PUT {tokens}/{country}/{party}/{uid}). Ignoring case:
    uids are CiStrings (OCPI 2.2.1 types §CiString), and a CPO may send one back in another case (CDRs are
    matched to tokens so: Token.uid_key, Token.objects.by_uid). `__iregex`: a regular expression PostgreSQL and
    SQLite both run."""
    in_json = '"' + _either({_in_json(uid) for uid in uids}) + '"'
    in_url = "/" + _either({_in_url(uid) for uid in uids}) + "(?:[/?#]|$)"
    return Q(request_body__iregex=in_json) | Q(response_body__iregex=in_json) | Q(url__iregex=in_url)


# The characters a token's uid is made of (OCPI 2.2.1 types §CiString: printable ASCII): each one a JSON writer
# writes as itself, or escaped as \u (any of them), \/ ('/'), \" or \\ (those two always: our writers, orjson and
# json, write no other escape of a printable ASCII character).
_PRINTABLE = frozenset(chr(code) for code in range(0x20, 0x7F))


def _as_written(uid: str) -> str:
    """The uid as a JSON string holds it when nothing in it is escaped that need not be."""
    return uid.replace("\\", "\\\\").replace('"', '\\"')


# A log row holds one of the uids (the parameters: each as a body and as a URL would hold it, lowered), in any case.
_HOLDS_A_UID = (
    "EXISTS (SELECT 1 FROM unnest(%s::text[], %s::text[]) AS uid(in_body, in_url) WHERE "
    'strpos(LOWER("ocpi_ocpimessage"."request_body" COLLATE "C"), uid.in_body) > 0 '
    'OR strpos(LOWER("ocpi_ocpimessage"."response_body" COLLATE "C"), uid.in_body) > 0 '
    'OR strpos(LOWER("ocpi_ocpimessage"."url" COLLATE "C"), uid.in_url) > 0)'
)


def _may_name(uids: list[str]) -> Q | None:
    r"""A cheap first search (substrings, no regular expression) for the rows `_naming` may find: a body that holds
    one of the uids as written in JSON or an escape that may write it otherwise (\u; \/ for a uid with '/'), a URL
    that holds one or a percent-encoding; in any case. None for a uid with other characters: no such search then.
    On PostgreSQL each uid is looked for with strpos() in the lowered texts (lower() under "C": ASCII only).
    Django's icontains (UPPER() LIKE UPPER() per uid) took longer than the regular expression, LIKE ANY of the
    lowered texts half as long again as strpos."""
    if not all(set(uid) <= _PRINTABLE for uid in uids):
        return None
    forms = sorted({(_as_written(uid).lower(), uid.lower()) for uid in uids})
    escapes = ["\\u", "\\/"] if any("/" in uid for uid in uids) else ["\\u"]
    found = Q(url__contains="%")
    for field in ("request_body", "response_body"):
        for escape in escapes:
            found |= Q(**{f"{field}__contains": escape})
    if connection.vendor == "postgresql":
        in_body, in_url = [body for body, _ in forms], [url for _, url in forms]
        return found | Q(RawSQL(_HOLDS_A_UID, (in_body, in_url), output_field=BooleanField()))  # noqa: S611
    for in_body, in_url in forms:
        found |= Q(request_body__icontains=in_body) | Q(response_body__icontains=in_body) | Q(url__icontains=in_url)
    return found


def _named(uids: list[str]) -> Case | Q:
    """`_naming`, its regular expression run only on the rows the cheap search found (CASE: PostgreSQL orders the
    conditions of an AND by their estimated cost, and would run the pattern first)."""
    maybe = _may_name(uids)
    if maybe is None:
        return _naming(uids)
    exact = ExpressionWrapper(_naming(uids), output_field=BooleanField())
    return Case(When(maybe, then=exact), default=Value(False), output_field=BooleanField())


def _erase(driver: Driver) -> dict[str, int]:
    uids = [uid for uid in driver.tokens.values_list("uid", flat=True) if uid]
    if not uids:
        return {"log_bodies_erased": 0, "pushes_scrubbed": 0}
    erased = OcpiMessage.objects.filter(_named(uids)).update(request_body="[erased]", response_body="[erased]")
    # The token pushes still kept hold the token as it was then, visual number included.
    scrubbed = 0
    for push in PushDelivery.objects.filter(module="tokens", payload__uid__in=uids).only("pk", "payload"):
        if isinstance(push.payload, dict) and push.payload.pop("visual_number", None) is not None:
            PushDelivery.objects.filter(pk=push.pk).update(payload=push.payload)
            scrubbed += 1
    return {"log_bodies_erased": erased, "pushes_scrubbed": scrubbed}


EXPIRING = (
    privacy.Expiry("ocpi_messages", "ocpi_messages", lambda since: OcpiMessage.objects.filter(created_at__lt=since)),
    privacy.Expiry("sync_runs", "sync_runs", lambda since: SyncRun.objects.filter(started_at__lt=since)),
    # A finding not seen again for its retention (fixed at the CPO, or the object gone).
    privacy.Expiry("data_quality", "data_quality", lambda since: DataQualityIssue.objects.filter(last_seen__lt=since)),
)


def register() -> None:
    privacy.register("ocpi", erase=_erase, expiring=EXPIRING)
