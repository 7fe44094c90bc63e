"""What a request that matched no URL, or that failed outside a view, is answered with: the protocol's own error
for an OCPI or Beckn client, Django's page for a person. Strict out: a CPO's client reads `status_code` from every
answer below /ocpi/, and a BAP reads `message.ack`. The protocol apps register their answers (ocpi/apps.py,
beckn/apps.py), as they register their senders: the domain below them knows no protocol.

Django calls these only with DEBUG off (with it on, it shows its debug page instead)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.views import defaults

# An answer for a request below a protocol's prefix, or None to leave it to Django's page.
Answer = Callable[[HttpRequest], HttpResponse | None]


@dataclass(frozen=True)
class ProtocolErrors:
    prefix: str  # "/ocpi/"
    not_found: Answer
    server_error: Answer


_registered: list[ProtocolErrors] = []


def register(errors: ProtocolErrors) -> None:
    if errors not in _registered:
        _registered.append(errors)


def _protocol_of(request: HttpRequest) -> ProtocolErrors | None:
    return next((e for e in _registered if request.path.startswith(e.prefix)), None)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    protocol = _protocol_of(request)
    answer = protocol.not_found(request) if protocol else None
    return answer if answer is not None else defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    protocol = _protocol_of(request)
    answer = protocol.server_error(request) if protocol else None
    return answer if answer is not None else defaults.server_error(request)
