"""Our tokens: issuing, blocking and changing them (each change is pushed to every connected CPO), and
real-time authorization (mod_tokens §"Real-time authorization")."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from emsp.models import Driver, Evse, Partner, Token, ci_key
from ocpi import push


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
        push.token_changed(token)
    return token


def token_set_blocked(*, token: Token, blocked: bool) -> Token:
    with transaction.atomic():
        token.is_blocked = blocked
        token.last_updated = timezone.now()
        token.save(update_fields=["is_blocked", "last_updated"])
        push.token_changed(token)
    return token


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
        push.token_changed(token)
    return token


def token_authorize(
    *,
    uid: str,
    token_type: str | None,
    partner: Partner,
    location_references: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Authorization:
    """Answer a CPO's real-time authorization. Unknown token → UnknownToken (HTTP 404 + 2004).

    The eMSP SHALL NOT check opening hours or EVSE status here (mod_tokens); we check the token, the
    driver's account and where the token may be used.
    """
    now = now or timezone.now()
    # `type` defaults to RFID (mod_tokens); lenient in: without a type, a token of another type still counts.
    tokens = Token.objects.select_related("driver").with_partner_restriction(partner)
    token = tokens.by_uid(uid, token_type or Token.Type.RFID).first()
    if token is None and not token_type:
        token = tokens.by_uid(uid).order_by("pk").first()
    if token is None:
        raise UnknownToken(uid)
    allowed = token.allowed_status(now, partner)
    location = None
    if location_references and allowed == Token.Allowed.ALLOWED:
        location = _allowed_location(partner, location_references)
    return Authorization(
        allowed=allowed,
        token=token,
        location=location,
        authorization_reference=secrets.token_hex(8).upper(),
    )


def _allowed_location(partner: Partner, refs: dict[str, Any]) -> dict[str, Any] | None:
    """Echo the LocationReferences, keeping only EVSEs of that location we know (mod_tokens §"LocationReferences")."""
    location_id = str(refs.get("location_id") or "").strip()
    if not location_id:
        return None
    echoed: dict[str, Any] = {"location_id": location_id}
    evse_uids = [str(u).strip() for u in refs.get("evse_uids") or [] if str(u).strip()]
    if evse_uids:
        location_keys = [f"{party}*{ci_key(location_id)}" for party in partner.party_keys()]
        known = set(
            Evse.objects.filter(
                location__ocpi_key__in=location_keys, uid_key__in=[ci_key(u) for u in evse_uids]
            ).values_list("uid_key", flat=True)
        )
        if known:
            evse_uids = [u for u in evse_uids if ci_key(u) in known]
        echoed["evse_uids"] = evse_uids
    return echoed
