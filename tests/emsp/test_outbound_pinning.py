"""The outbound seam connects to the address it checked (no DNS-rebinding window), and keeps the hostname for
the Host header, TLS SNI and certificate verification.

Nothing here reaches the internet: connects to public addresses are intercepted at `socket.socket.connect`
(they fail at once, or pretend to succeed where TLS is stopped before any I/O); real traffic only goes to a
server on 127.0.0.1 started by the test.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import urllib3.connection
from django.test import override_settings
from urllib3.exceptions import NewConnectionError
from urllib3.util.ssl_ import resolve_cert_reqs

from emsp import outbound

PUBLIC = "93.184.215.14"  # a public address; the tests intercept every connect to it
REBINDING = "rebind.example"  # .example is reserved: the real resolver never answers it
_real_getaddrinfo = socket.getaddrinfo

AddrInfo = list[tuple[Any, ...]]


def _answer(address: str, port: Any) -> AddrInfo:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    port_number = int(port) if port is not None else 0
    sockaddr = (address, port_number, 0, 0) if family == socket.AF_INET6 else (address, port_number)
    return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]


@pytest.fixture(autouse=True)
def fresh_resolutions() -> Iterator[None]:
    outbound._resolve_cached.cache_clear()
    yield
    outbound._resolve_cached.cache_clear()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, list[str]], list[str]]:
    """Script the DNS answers for one name: the n-th lookup gets the n-th answer (the last one repeats).
    Every other name (and every IP literal) goes to the real resolver. Returns the lookup log."""
    lookups: list[str] = []

    def script(name: str, answers: list[str]) -> list[str]:
        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> AddrInfo:
            if isinstance(host, str) and host.rstrip(".").lower() == name:
                lookups.append(host)
                return _answer(answers[min(len(lookups), len(answers)) - 1], port)
            return _real_getaddrinfo(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return lookups

    return script


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], list[tuple[Any, ...]]]:
    """Record every socket connect; refuse it at once, or (succeed=True) pretend it worked without any I/O."""
    attempts: list[tuple[Any, ...]] = []

    def install(succeed: bool = False) -> list[tuple[Any, ...]]:
        def connect(sock: socket.socket, address: tuple[Any, ...]) -> None:
            attempts.append(tuple(address))
            if not succeed:
                raise ConnectionRefusedError(111, "connect intercepted by the test")

        monkeypatch.setattr(socket.socket, "connect", connect)
        return attempts

    return install


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
def test_the_connection_goes_to_the_checked_address_not_a_rebound_one(
    resolver: Callable[[str, list[str]], list[str]], connects: Callable[[bool], list[tuple[Any, ...]]]
) -> None:
    # The attacker's DNS answers a public address to the check, then loopback to anything after it.
    lookups = resolver(REBINDING, [PUBLIC, "127.0.0.1"])
    attempts = connects(False)

    with pytest.raises(outbound.OutboundError):
        outbound.send("GET", f"http://{REBINDING}/ocpi/versions", timeout=1)

    assert [address[0] for address in attempts] == [PUBLIC]
    assert attempts[0][1] == 80
    assert len(lookups) == 1  # the name was resolved once, for the check; the connection did not ask again


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
@pytest.mark.parametrize(
    "address",
    [
        "100.100.100.200",
        "100.64.0.1",
        "100.127.255.254",
        "::ffff:10.0.0.5",
        "::ffff:100.64.0.1",
        "64:ff9b::a9fe:a9fe",
        "224.0.0.1",
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
    ],
)
def test_shared_mapped_and_other_non_global_addresses_are_refused(
    resolver: Callable[[str, list[str]], list[str]], connects: Callable[[bool], list[tuple[Any, ...]]], address: str
) -> None:
    """100.64.0.0/10 (carrier-grade NAT, Tailscale, Alibaba Cloud's metadata at 100.100.100.200) is neither private
    nor reserved to Python's ipaddress: signed callbacks had gone there."""
    resolver(REBINDING, [address])
    attempts = connects(False)
    with pytest.raises(outbound.ForbiddenTarget, match="private address"):
        outbound.send("GET", f"http://{REBINDING}/latest/meta-data", timeout=1)
    assert attempts == []


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "64:ff9b::5db8:d70e"])
def test_a_public_address_passes_the_check(resolver: Callable[[str, list[str]], list[str]], address: str) -> None:
    resolver(REBINDING, [address])
    assert outbound.check_target(f"http://{REBINDING}/x") == (address,)


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
def test_a_name_that_resolves_to_a_private_address_is_refused_before_any_connect(
    resolver: Callable[[str, list[str]], list[str]], connects: Callable[[bool], list[tuple[Any, ...]]]
) -> None:
    resolver(REBINDING, ["169.254.169.254"])
    attempts = connects(False)

    with pytest.raises(outbound.ForbiddenTarget, match="private address"):
        outbound.send("GET", f"http://{REBINDING}/latest/meta-data", timeout=1)

    assert attempts == []


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
def test_https_pins_the_address_but_verifies_the_certificate_for_the_hostname(
    resolver: Callable[[str, list[str]], list[str]],
    connects: Callable[[bool], list[tuple[Any, ...]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver(REBINDING, [PUBLIC, "127.0.0.1"])
    attempts = connects(True)
    handshakes: list[dict[str, Any]] = []

    def wrap(**kwargs: Any) -> Any:
        handshakes.append(kwargs)
        raise ssl.SSLError("handshake stopped by the test")  # before the unconnected socket is used

    monkeypatch.setattr(urllib3.connection, "_ssl_wrap_socket_and_match_hostname", wrap)

    with pytest.raises(outbound.OutboundError, match=r"TlsHandshakeError: TLS handshake with rebind\.example failed"):
        outbound.send("GET", f"https://{REBINDING}:8443/ocpi/versions", timeout=1)

    assert [address[:2] for address in attempts] == [(PUBLIC, 8443)]
    (handshake,) = handshakes
    assert handshake["server_hostname"] == REBINDING  # SNI
    # urllib3 matches the certificate against assert_hostname, or server_hostname when that is unset.
    assert (handshake["assert_hostname"] or handshake["server_hostname"]) == REBINDING
    assert resolve_cert_reqs(handshake["cert_reqs"]) == ssl.CERT_REQUIRED


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
def test_concurrent_requests_each_connect_to_their_own_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two threads share the module's session; both are inside connect at the same moment (the barrier), so a
    # pin kept in shared state would send one of them to the other's address.
    answers = {"a.example": PUBLIC, "b.example": "93.184.215.15"}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> AddrInfo:
        if host in answers:
            return _answer(answers[host], port)
        return _real_getaddrinfo(host, port, *args, **kwargs)

    both_connecting = threading.Barrier(2, timeout=5)
    attempts: dict[str, list[str]] = {"a.example": [], "b.example": []}

    def connect(sock: socket.socket, address: tuple[Any, ...]) -> None:
        both_connecting.wait()
        pin = outbound._pin.get()
        assert pin is not None
        attempts[pin.host].append(address[0])
        raise ConnectionRefusedError(111, "connect intercepted by the test")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    errors: list[BaseException] = []

    def request(host: str) -> None:
        try:
            outbound.send("GET", f"http://{host}/ocpi/versions", timeout=1)
        except outbound.OutboundError:
            pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(host,)) for host in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    assert attempts == {"a.example": [PUBLIC], "b.example": ["93.184.215.15"]}
    assert outbound._pin.get() is None  # nothing leaked into this thread either


def test_a_pin_only_serves_the_host_it_was_checked_for(connects: Callable[[bool], list[tuple[Any, ...]]]) -> None:
    # Defence in depth: were a proxy or a redirect ever in play, its connection must not borrow the pin.
    attempts = connects(False)
    token = outbound._pin.set(outbound._Pin(host="partner.example", addresses=(PUBLIC,)))
    try:
        with pytest.raises(NewConnectionError, match=r"the checked host is partner\.example"):
            outbound._PinnedHTTPConnection("proxy.example", 3128).connect()
    finally:
        outbound._pin.reset(token)
    assert attempts == []


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers.items()))
        payload = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@override_settings(ALLOW_PRIVATE_NETWORKS=True)
def test_with_private_networks_allowed_a_local_peer_is_reached_with_its_host_header(
    local_server: tuple[int, list[dict[str, str]]],
) -> None:
    port, seen = local_server

    response = outbound.send("GET", f"http://127.0.0.1:{port}/ocpi/versions", request_id="req-1", timeout=5)

    assert response.status == 200
    assert response.json() == {"ok": True}
    assert response.request_id == "req-1"
    (headers,) = seen
    assert headers["Host"] == f"127.0.0.1:{port}"
    assert headers["X-Request-ID"] == "req-1"


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
def test_a_pinned_request_really_talks_http_to_the_checked_address_with_the_hostname_as_host(
    local_server: tuple[int, list[dict[str, str]]],
    resolver: Callable[[str, list[str]], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The pinned path end to end: the name "resolves" to the local server, which the check is told to accept
    # here only, and a later lookup would answer an address where nothing listens.
    port, seen = local_server
    lookups = resolver("partner.example", ["127.0.0.1", "127.0.0.2"])
    monkeypatch.setattr(outbound, "_is_private", lambda address: False)

    response = outbound.send("GET", f"http://partner.example:{port}/ocpi/versions", timeout=5)

    assert response.status == 200
    (headers,) = seen
    assert headers["Host"] == f"partner.example:{port}"
    assert len(lookups) == 1


@override_settings(ALLOW_PRIVATE_NETWORKS=True)
def test_a_callers_header_replaces_ours_whatever_its_case_and_a_bad_one_is_an_outbound_error(
    local_server: tuple[int, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = local_server
    lines: list[list[tuple[str, str]]] = []
    monkeypatch.setattr(_Recorder, "do_GET", _recording_lines(lines, _Recorder.do_GET))

    outbound.send("GET", f"http://127.0.0.1:{port}/x", headers={"accept": "application/json", "user-agent": "t"})

    (sent,) = lines
    names = [name.lower() for name, _ in sent]
    assert names.count("accept") == 1 and names.count("user-agent") == 1
    assert dict((name.lower(), value) for name, value in sent)["accept"] == "application/json"
    with pytest.raises(outbound.OutboundError):
        outbound.send("GET", f"http://127.0.0.1:{port}/x", headers={"Authorization": None})  # type: ignore[dict-item]
    with pytest.raises(outbound.OutboundError):
        outbound.send("GET", f"http://127.0.0.1:{port}/x", headers={"Authorization": "Token a\nInjected: 1"})


def _recording_lines(lines: list[list[tuple[str, str]]], handle: Callable[[Any], None]) -> Callable[[Any], None]:
    def do_get(self: Any) -> None:
        lines.append(list(self.headers.items()))
        handle(self)

    return do_get
