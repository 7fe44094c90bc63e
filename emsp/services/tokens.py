"""Our tokens: issuing, blocking and changing them (each change is pushed to every connected CPO), and
real-time authorization (mod_tokens §"Real-time authorization")."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from emsp.models import Driver, Evse, Location, Partner, Token, ci_key
from emsp.ports import cpo_gateway


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
    token_type: str | None,
    partner: Partner,
    location_references: dict[str, Any] | None = None,
    now: datetime | None = None,
    party: tuple[str, str] | None = None,
) -> Authorization:
    """Answer a CPO's real-time authorization. Unknown token → UnknownToken (HTTP 404 + 2004). `party`: the
    one party behind a hub the request comes from (its charge points only); by default every party of the
    partner.

    The eMSP SHALL NOT check opening hours or EVSE status here (mod_tokens); we check the token, the
    driver's account and where the token may be used.
    """
    now = now or timezone.now()
    token = _token_for_authorization(uid, token_type, partner)
    if token is None:
        raise UnknownToken(uid)
    allowed = token.allowed_status(now, partner)
    location = None
    if location_references and allowed == Token.Allowed.ALLOWED:
        location = _allowed_location(partner, location_references, party)
    return Authorization(
        allowed=allowed,
        token=token,
        location=location,
        authorization_reference=secrets.token_hex(8).upper(),
    )


_TOKEN = Token._meta.db_table
_DRIVER = Driver._meta.db_table
_ALLOWED = Token.allowed_partners.through._meta.db_table
_EVSE = Evse._meta.db_table
_LOCATION = Location._meta.db_table
# Plain SQL on the hot path, as for the EVSE PATCH: building this ORM query (a join and two EXISTS) cost more
# than running it. One row: the token, its driver's standing and whether `partner` may see it used.
_AUTHORIZE_SQL = (
    f"SELECT t.*, d.is_blocked AS driver_is_blocked, d.wallet_balance AS driver_wallet_balance, "  # noqa: S608
    f"EXISTS (SELECT 1 FROM {_ALLOWED} a WHERE a.token_id = t.id) AS is_restricted, "
    f"EXISTS (SELECT 1 FROM {_ALLOWED} a WHERE a.token_id = t.id AND a.partner_id = %s) AS allowed_here "
    f"FROM {_TOKEN} t JOIN {_DRIVER} d ON d.id = t.driver_id WHERE t.uid_key = %s "
)
_OF_TYPE = _AUTHORIZE_SQL + "AND t.type = %s LIMIT 1"
# `type` defaults to RFID (mod_tokens); lenient in: without a type, a token of another type still counts.
_RFID_FIRST = _AUTHORIZE_SQL + "ORDER BY CASE WHEN t.type = %s THEN 0 ELSE 1 END, t.id LIMIT 1"


def _token_for_authorization(uid: str, token_type: str | None, partner: Partner) -> Token | None:
    sql = _OF_TYPE if token_type else _RFID_FIRST
    found = list(Token.objects.raw(sql, [partner.pk, ci_key(uid), token_type or Token.Type.RFID]))
    if not found:
        return None
    token = found[0]
    balance = token.driver_wallet_balance
    # The driver as loaded with only the fields allowed_status reads (any other field loads on access).
    # SQLite hands the balance back as a number: make it exact.
    token.driver = Driver.from_db(
        "default",
        ["id", "is_blocked", "wallet_balance"],
        [token.driver_id, bool(token.driver_is_blocked), None if balance is None else Decimal(str(balance))],
    )
    return token


def _known_evse_keys(location_keys: list[str], uid_keys: list[str]) -> set[str]:
    """Which of the EVSE keys exist at one of the location keys (plain SQL, as above: the ORM's query building
    was half of this lookup's cost in the authorization's profile)."""
    sql = (
        f"SELECT e.uid_key FROM {_EVSE} e JOIN {_LOCATION} l ON l.id = e.location_id "  # noqa: S608
        f"WHERE l.ocpi_key IN ({', '.join(['%s'] * len(location_keys))}) "
        f"AND e.uid_key IN ({', '.join(['%s'] * len(uid_keys))})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*location_keys, *uid_keys])
        return {row[0] for row in cursor.fetchall()}


def _allowed_location(
    partner: Partner, refs: dict[str, Any], party: tuple[str, str] | None = None
) -> dict[str, Any] | None:
    """Echo the LocationReferences, keeping only EVSEs of that location we know (mod_tokens §"LocationReferences")."""
    location_id = str(refs.get("location_id") or "").strip()
    if not location_id:
        return None
    echoed: dict[str, Any] = {"location_id": location_id}
    evse_uids = [str(u).strip() for u in refs.get("evse_uids") or [] if str(u).strip()]
    if evse_uids:
        parties = [ci_key(*party)] if party is not None else partner.party_keys()
        location_keys = [f"{key}*{ci_key(location_id)}" for key in parties]
        known = _known_evse_keys(location_keys, [ci_key(u) for u in evse_uids])
        if known:
            evse_uids = [u for u in evse_uids if ci_key(u) in known]
        echoed["evse_uids"] = evse_uids
    return echoed
