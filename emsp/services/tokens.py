"""Our tokens: issuing, blocking and changing them (each change is pushed to every connected CPO), and
real-time authorization (mod_tokens §"Real-time authorization")."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from emsp.models import Driver, Evse, Location, Partner, Token, ci_key
from emsp.ports import cpo_gateway
from emsp.rows import model_from_row, select_columns


class UnknownToken(Exception):
    """No token of ours has this uid (and type)."""


@dataclass
class Authorization:
    allowed: str
    token: Token
    location: dict[str, Any] | None
    authorization_reference: str
    info: str = ""


def _new_uid() -> str:
    return secrets.token_hex(8).upper()


def _new_contract_id() -> str:
    # eMA-ID shaped: CC-PID-C<8 digits> (mod_tokens recommends the eMA-ID for contract_id).
    return f"{settings.OCPI_COUNTRY_CODE}-{settings.OCPI_PARTY_ID}-C{secrets.randbelow(10**8):08d}"


def token_issue(
    *,
    driver: Driver,
    token_type: str = Token.Type.RFID,
    uid: str | None = None,
    contract_id: str | None = None,
    visual_number: str = "",
    whitelist: str | None = None,
    expires_at: datetime | None = None,
    group_id: str = "",
) -> Token:
    """Issue a token to a driver and push it to every connected CPO."""
    if whitelist is None:
        # mod_tokens: APP_USER / AD_HOC_USER tokens are RECOMMENDED to use whitelist NEVER.
        whitelist = Token.Whitelist.ALLOWED if token_type == Token.Type.RFID else Token.Whitelist.NEVER
    with transaction.atomic():
        token = Token.objects.create(
            driver=driver,
            uid=uid or _new_uid(),
            type=token_type,
            contract_id=contract_id or _new_contract_id(),
            visual_number=visual_number,
            issuer=settings.OCPI_BUSINESS_NAME[:64],
            group_id=group_id,
            whitelist=whitelist,
            expires_at=expires_at,
            last_updated=timezone.now(),
        )
        cpo_gateway().push_token(token)
    return token


def token_set_blocked(*, token: Token, blocked: bool) -> Token:
    with transaction.atomic():
        token.is_blocked = blocked
        token.last_updated = timezone.now()
        token.save(update_fields=["is_blocked", "last_updated"])
        cpo_gateway().push_token(token)
    return token


def token_changed(*, token: Token) -> None:
    """A token was saved by other means (the staff console's form): every CPO hears of it (mod_tokens Push)."""
    cpo_gateway().push_token(token)


def driver_tokens_changed(*, driver: Driver) -> int:
    """The driver's standing changed (blocked or unblocked in the console): what `valid` we send for each of
    their tokens follows it (ocpi/rendering.py), so each token's last_updated moves (a CPO pulling with
    date_from sees it) and every CPO is sent it. Returns how many tokens."""
    with transaction.atomic():
        tokens = list(Token.objects.select_for_update().filter(driver=driver))
        now = timezone.now()
        for token in tokens:
            token.last_updated = now
            token.save(update_fields=["last_updated"])
            cpo_gateway().push_token(token)
    return len(tokens)


def tokens_expired_push(*, now: datetime | None = None, limit: int = 500) -> int:
    """Tokens whose expires_at has passed since they were last sent are now sent as not valid: OCPI's Token has no
    expiry of its own, and a CPO that whitelists never asks us. A token last changed before it expired is one
    not sent since; moving its last_updated marks it sent (and lets a CPO's date_from pull see it)."""
    now = now or timezone.now()
    due = list(
        Token.objects.filter(expires_at__lte=now, last_updated__lt=F("expires_at"))
        .order_by("expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    sent = 0
    for pk in due:
        with transaction.atomic():
            token = Token.objects.select_for_update().filter(pk=pk, last_updated__lt=F("expires_at")).first()
            if token is None:  # changed meanwhile, and sent then
                continue
            token.last_updated = now
            token.save(update_fields=["last_updated"])
            cpo_gateway().push_token(token)
            sent += 1
    return sent


def token_update(*, token: Token, **fields: Any) -> Token:
    allowed = {"visual_number", "valid", "whitelist", "group_id", "language", "expires_at", "contract_id"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    with transaction.atomic():
        for name, value in fields.items():
            setattr(token, name, value)
        token.last_updated = timezone.now()
        token.save()
        cpo_gateway().push_token(token)
    return token


def token_authorize(
    *,
    uid: str,
    token_type: str | tuple[str, ...] | None,
    partner: Partner,
    location_references: dict[str, Any] | None = None,
    now: datetime | None = None,
    party: tuple[str, str] | None = None,
) -> Authorization:
    """Answer a CPO's real-time authorization. Unknown token → UnknownToken (HTTP 404 + 2004). `token_type`
    None is RFID (mod_tokens: "Default if omitted: RFID", in 2.1.1 and 2.3.0 too): a token of another type with
    that uid is not the one asked for. Several types: a token of any of them, the oldest (2.1.1's OTHER, which
    stands for our app and ad-hoc tokens too). `party`: the one party behind a hub the request comes from (its
    charge points only); by default every party of the partner.

    The eMSP SHALL NOT check opening hours or EVSE status here (mod_tokens); we check the token, the
    driver's account and where the token may be used.
    """
    now = now or timezone.now()
    wanted = _wanted_location(partner, location_references, party)
    types = (token_type,) if isinstance(token_type, str) else token_type or (Token.Type.RFID,)
    found = _token_for_authorization(uid, types, partner, wanted)
    if found is None:
        raise UnknownToken(uid)
    token, known_evse_keys = found
    allowed = token.allowed_status(now, partner)
    location = None
    if wanted is not None and allowed == Token.Allowed.ALLOWED:
        location = _echoed_location(wanted, known_evse_keys)
    return Authorization(
        allowed=allowed,
        token=token,
        location=location,
        authorization_reference=secrets.token_hex(8).upper(),
    )


@dataclass(frozen=True)
class _WantedLocation:
    """The LocationReferences of a request, with the keys its EVSEs are looked up by."""

    location_id: str
    evse_uids: list[str]
    location_keys: list[str]  # one per party the location may belong to
    evse_keys: list[str]


def _wanted_location(
    partner: Partner, refs: dict[str, Any] | None, party: tuple[str, str] | None
) -> _WantedLocation | None:
    location_id = str((refs or {}).get("location_id") or "").strip()
    if not location_id:
        return None
    evse_uids = [str(u).strip() for u in (refs or {}).get("evse_uids") or [] if str(u).strip()]
    parties = [ci_key(*party)] if party is not None else partner.party_keys()
    return _WantedLocation(
        location_id=location_id,
        evse_uids=evse_uids,
        location_keys=[f"{key}*{ci_key(location_id)}" for key in parties] if evse_uids else [],
        evse_keys=[ci_key(u) for u in evse_uids],
    )


def _echoed_location(wanted: _WantedLocation, known_evse_keys: set[str]) -> dict[str, Any]:
    """Echo the LocationReferences, keeping only EVSEs of that location we know (mod_tokens §"LocationReferences");
    when we know none of them, all are echoed as sent."""
    echoed: dict[str, Any] = {"location_id": wanted.location_id}
    if wanted.evse_uids:
        evse_uids = wanted.evse_uids
        if known_evse_keys:
            evse_uids = [u for u, key in zip(evse_uids, wanted.evse_keys, strict=True) if key in known_evse_keys]
        echoed["evse_uids"] = evse_uids
    return echoed


_TOKEN = Token._meta.db_table
_DRIVER = Driver._meta.db_table
_ALLOWED = Token.allowed_partners.through._meta.db_table
_EVSE = Evse._meta.db_table
_LOCATION = Location._meta.db_table
# Joins the EVSE keys found; an EVSE uid is printable text (ocpi/views/tokens.py), never a tab.
_KEY_SEPARATOR = "\t"


@functools.lru_cache(maxsize=256)
def _authorize_sql(*, vendor: str, types: int, locations: int, evses: int) -> str:
    """One statement, one row: the token, its driver's standing, whether the requesting partner may see it used
    and which of the requested EVSEs we know at the location (one to a few location keys, one per party).

    Plain SQL on the hot path: building the ORM query (a join and two EXISTS) cost more than running it, and
    the EVSEs took a statement of their own. The keys are IN lists, not arrays: PostgreSQL estimates `= ANY($n)`
    at ten elements, so a prepared statement with arrays never got a generic plan and was planned on every call
    (0.35 ms more of PostgreSQL's CPU per authorization, measured)."""
    sql = (
        f"SELECT {select_columns(Token, 't')}, d.is_blocked, d.wallet_balance, "  # noqa: S608
        f"EXISTS (SELECT 1 FROM {_ALLOWED} a WHERE a.token_id = t.id), "
        f"EXISTS (SELECT 1 FROM {_ALLOWED} a WHERE a.token_id = t.id AND a.partner_id = %s)"
    )
    if evses:
        aggregate = "string_agg" if vendor == "postgresql" else "group_concat"
        sql += (
            f", (SELECT {aggregate}(e.uid_key, %s) FROM {_EVSE} e JOIN {_LOCATION} l ON l.id = e.location_id "  # noqa: S608
            f"WHERE l.ocpi_key IN ({', '.join(['%s'] * locations)}) AND e.uid_key IN ({', '.join(['%s'] * evses)}))"
        )
    sql += f" FROM {_TOKEN} t JOIN {_DRIVER} d ON d.id = t.driver_id WHERE t.uid_key = %s "
    if types == 1:
        return sql + "AND t.type = %s LIMIT 1"  # one at most: token_unique_uid_type
    return sql + f"AND t.type IN ({', '.join(['%s'] * types)}) ORDER BY t.id LIMIT 1"


def _token_for_authorization(
    uid: str, types: tuple[str, ...], partner: Partner, wanted: _WantedLocation | None
) -> tuple[Token, set[str]] | None:
    """The token of this uid and one of these types with what allowed_status reads of its driver and partners,
    and which EVSE keys of `wanted` we know."""
    location_keys, evse_keys = (wanted.location_keys, wanted.evse_keys) if wanted is not None else ([], [])
    params: list[Any] = [partner.pk]
    if evse_keys:
        params += [_KEY_SEPARATOR, *location_keys, *evse_keys]
    params += [ci_key(uid), *types]
    sql = _authorize_sql(vendor=connection.vendor, types=len(types), locations=len(location_keys), evses=len(evse_keys))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    token = model_from_row(Token, row)
    is_blocked, balance, token.is_restricted, token.allowed_here, *known = row[len(Token._meta.concrete_fields) :]
    # The driver as loaded with only the fields allowed_status reads (any other field loads on access).
    # SQLite hands the balance back as a number: make it exact.
    token.driver = Driver.from_db(
        connection.alias,
        ["id", "is_blocked", "wallet_balance"],
        [token.driver_id, bool(is_blocked), None if balance is None else Decimal(str(balance))],
    )
    return token, set(known[0].split(_KEY_SEPARATOR)) if known and known[0] else set()
