"""What the domain needs from a charge point operator, as a port: the domain says what it wants in its own
words; an adapter says it in the CPO's protocol. `ocpi/gateway.py` implements it and registers itself at
start-up (`OcpiConfig.ready()`), so the domain never imports a protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from emsp.models import Command, Evse, Partner, Token


class CpoUnreachable(Exception):
    """The CPO could not be asked: not connected, no endpoint for this, no answer, or an error answer."""


@dataclass(frozen=True)
class CommandReply:
    """The CPO's synchronous answer to a command (before the asynchronous result)."""

    result: str  # ACCEPTED, REJECTED, NOT_SUPPORTED, UNKNOWN_SESSION, ... as the CPO said it
    timeout_seconds: int | None  # how long the CPO may take to send the result; None when unusable
    message: str = ""  # the CPO's explanation, if any
    response: dict[str, Any] = field(default_factory=dict)  # the answer as received, for the record

    @property
    def accepted(self) -> bool:
        return self.result == "ACCEPTED"


class CpoGateway(Protocol):
    def send_command(self, command: Command) -> CommandReply:
        """Send one command to the CPO of `command.partner` and return its synchronous answer. Raises
        CpoUnreachable when the CPO can't be asked or answers with an error."""
        ...

    def fetch_evse(self, evse: Evse, *, timeout: float) -> dict[str, Any] | None:
        """The EVSE as its CPO describes it right now (normalised, with its connectors), or None when the
        CPO can't answer within `timeout` seconds."""
        ...

    def push_token(self, token: Token) -> None:
        """Tell every connected CPO that one of our tokens changed (queued in the caller's transaction)."""
        ...

    def pull(self, partner: Partner, objects: str, *, since: datetime) -> bool:
        """Fetch what changed at `partner` since `since` (`objects`: locations, tariffs, sessions, cdrs) and
        store it. Failures are recorded by the adapter, not raised: True when the CPO answered the whole list,
        False when it could not be asked (no such endpoint) or did not answer."""
        ...


_gateway: CpoGateway | None = None


def register_cpo_gateway(gateway: CpoGateway) -> None:
    global _gateway
    _gateway = gateway


def cpo_gateway() -> CpoGateway:
    if _gateway is None:
        raise RuntimeError("no CPO gateway registered: is the 'ocpi' app in INSTALLED_APPS?")
    return _gateway
