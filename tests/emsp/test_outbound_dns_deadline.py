"""Resolving the partner's name counts against the request's deadline (emsp/outbound.py `_getaddrinfo`): a resolver
that hangs had held `outbound.send`, and the worker making it, for as long as the lookup took (the check of the
target's addresses resolved before the clock started; with private networks allowed urllib3 resolved with no
timeout at all). Now the request fails at its deadline, as one that was never sent.

The OS seam is patched: `socket.getaddrinfo` takes HANG_SECONDS for one reserved name (.example: the real resolver
never answers it), then fails; every other name and address goes to the real one. Nothing leaves this machine.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from django.test import override_settings

from emsp import outbound
from emsp.ports import CpoUnreachable
from emsp.services.commands import may_have_reached_cpo
from tests.emsp import test_outbound_pinning as outbound_pinning

HANGING = "hanging-dns.example"
HANG_SECONDS = 3.0
TIMEOUT = 0.5
_real_getaddrinfo = socket.getaddrinfo


fresh_resolutions = outbound_pinning.fresh_resolutions  # every test starts with no name remembered


@pytest.fixture
def hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A resolver that takes HANG_SECONDS over HANGING and then fails (as one timing out does: EAI_AGAIN).
    Returns the names of the threads that asked it."""
    askers: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == HANGING:
            askers.append(threading.current_thread().name)
            time.sleep(HANG_SECONDS)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return _real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return askers


def _counts_as_not_sent(error: BaseException) -> bool:
    """Would a command whose request failed with `error` be taken as never having reached the CPO?"""
    try:
        raise CpoUnreachable("no CommandResponse") from error
    except CpoUnreachable as wrapped:
        return not may_have_reached_cpo(wrapped)


@pytest.mark.parametrize("private_networks", [False, True], ids=["checked-and-pinned", "private-networks-allowed"])
def test_a_hanging_resolver_fails_the_request_at_its_deadline(
    hanging_resolver: list[str], private_networks: bool
) -> None:
    started = time.monotonic()
    with (
        override_settings(ALLOW_PRIVATE_NETWORKS=private_networks, OUTBOUND_CONNECT_TIMEOUT_SECONDS=TIMEOUT),
        pytest.raises(outbound.OutboundError, match=r"^deadline") as failed,
    ):
        outbound.send("POST", f"http://{HANGING}/ocpi/2.2.1/commands/START_SESSION", json={}, timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    assert TIMEOUT - 0.05 < elapsed < TIMEOUT + 0.4, f"a {TIMEOUT} s request took {elapsed:.2f} s"
    assert hanging_resolver == ["outbound-resolve"]  # looked up once, in a thread the request did not wait out
    assert "resolving hanging-dns.example took longer than the time left" in str(failed.value)
    assert _counts_as_not_sent(failed.value), repr(failed.value)


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
def test_a_lookup_that_timed_out_is_not_remembered(hanging_resolver: list[str]) -> None:
    """The next request asks the resolver again: a failure is not cached as the name's addresses."""
    for _ in range(2):
        with pytest.raises(outbound.OutboundError, match=r"^deadline"):
            outbound.send("GET", f"http://{HANGING}/ocpi/versions", timeout=0.2)
    assert len(hanging_resolver) == 2


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
def test_a_name_resolved_in_time_is_used_and_a_lookup_outside_send_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A quick resolver's answer is checked as before (here a private address, refused), in send() and out of it."""
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *args, **kwargs: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 0))],
    )
    with pytest.raises(outbound.ForbiddenTarget, match=r"private address \(10\.1\.2\.3\)"):
        outbound.send("GET", "http://quick.example/ocpi/versions", timeout=TIMEOUT)
    outbound._resolve_cached.cache_clear()
    with pytest.raises(outbound.ForbiddenTarget, match=r"private address \(10\.1\.2\.3\)"):
        outbound.check_target("http://quick.example/ocpi/versions")
