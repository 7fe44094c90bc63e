"""Errors we answer Beckn requests with: the BECKN-005 codes we use, and the exception that carries one with
the JSON path it concerns (a NACK before the ACK, an `error` in the on_* callback after it)."""

from __future__ import annotations

from typing import Any

# BECKN-005 error codes we use.
INVALID_REQUEST = "30000"
PROVIDER_NOT_FOUND = "30001"
ITEM_NOT_FOUND = "30004"
CATEGORY_NOT_FOUND = "30005"
FULFILLMENT_UNAVAILABLE = "30008"
ORDER_NOT_FOUND = "30010"
INVALID_CANCELLATION_REASON = "30011"
INVALID_UPDATE_TARGET = "30012"
RATING_ENTITY_NOT_FOUND = "30014"
INVALID_RATING = "30015"
BUSINESS_ERROR = "40000"
ACTION_NOT_APPLICABLE = "40001"
QUOTE_UNAVAILABLE = "40003"
PAYMENT_NOT_SUPPORTED = "40004"
FULFILMENT_AGENT_UNAVAILABLE = "40006"
POLICY_ERROR = "50000"
CANCELLATION_NOT_POSSIBLE = "50001"
UPDATE_NOT_POSSIBLE = "50002"
UNSUPPORTED_RATING_CATEGORY = "50003"


class BecknRequestError(Exception):
    """The request is not one we can act on: NACK (or an error callback) with a BECKN-005 code and path.
    `alternatives` (catalogue hits) are chargers the app can select instead: they follow the error as an
    on_search catalogue in the same transaction (free in `window`, when one was asked for)."""

    def __init__(
        self, code: str, path: str, message: str, *, alternatives: list[Any] | None = None, window: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.path = path
        self.message = message
        self.alternatives = alternatives or []
        self.window = window

    def as_error(self) -> dict[str, str]:
        return {"code": self.code, "paths": self.path, "message": self.message}
