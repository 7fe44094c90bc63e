"""Wire objects we send (strict out): our Token, and the CommandRequest bodies of mod_commands."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from emsp.models import Token
from ocpi.normalize import format_ocpi_datetime


def token_to_ocpi(token: Token) -> dict[str, Any]:
    """mod_tokens §"Token object": only spec fields, spec types."""
    obj: dict[str, Any] = {
        "country_code": settings.OCPI_COUNTRY_CODE,
        "party_id": settings.OCPI_PARTY_ID,
        "uid": token.uid,
        "type": token.type,
        "contract_id": token.contract_id,
        "issuer": token.issuer,
        "valid": token.valid and not token.is_blocked,
        "whitelist": token.whitelist,
        "last_updated": format_ocpi_datetime(token.last_updated),
    }
    if token.visual_number:
        obj["visual_number"] = token.visual_number
    if token.group_id:
        obj["group_id"] = token.group_id
    if token.language:
        obj["language"] = token.language
    return obj
