"""The one seam for outbound HTTP: timeouts, no redirects, no private targets unless allowed, request ids.

Everything that talks to a partner (OCPI client, Beckn callbacks, registry lookups) goes through `send()`.
Tests patch `emsp.outbound.send`, or run a real peer process on 127.0.0.1.

Unless private networks are allowed, the host is resolved once, every address is checked, and the
connection is made to those checked addresses only ("pinned"): urllib3 does not resolve the name again.
Otherwise a partner-controlled DNS name could answer a public address to the check and 127.0.0.1 or
169.254.169.254 to the connection (DNS rebinding, OWASP API7). The URL, the Host header, TLS SNI and
certificate verification all keep the hostname; only the socket's peer address is pinned.

A request's timeout is one deadline for all of it: connecting, TLS, sending, the answer's headers and its body.
urllib3's own timeouts apply to each socket operation, so a peer sending a header line or a chunk every little
while could hold a request (and the worker making it) for as long as it liked: each socket operation here waits
no longer than the time left (see _DeadlineReader). Resolving the host's name counts against it too: the lookup
runs in a thread of its own, waited for no longer than the time left (_getaddrinfo), so a resolver that hangs
fails the request at its deadline instead of holding the worker until the resolver gives up, if it ever does.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import os
import socket
import ssl
import sys
import threading
import time
import uuid
from concurrent import futures
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import certifi
import orjson
import urllib3
from django.conf import settings
from urllib3 import HTTPHeaderDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection
from urllib3.util import parse_url

from emsp.middleware import correlation_id_var

log = logging.getLogger(__name__)

# How long a resolution is reused. The pinned connection goes to these addresses, so a forever-cache would
# keep using a partner's old address after it moves (load balancers change addresses routinely).
RESOLVE_TTL_SECONDS = 60

# The most of an answer's body we hold, once decompressed (settings.OUTBOUND_MAX_BODY_BYTES overrides it): a
# partner's reply is read in chunks up to this and refused past it. We ask for gzip/deflate, and a few hundred
# KiB of gzip inflate to hundreds of MiB: without a cap one reply could take the worker's memory.
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
_READ_CHUNK_BYTES = 64 * 1024

# The shortest wait given to a socket operation once the deadline is (nearly) reached: a timeout of 0 would turn
# the socket non-blocking (BlockingIOError, not a timeout).
_LEAST_WAIT_SECONDS = 0.001

# The most name lookups under way at once in this process (_getaddrinfo): a resolver that hangs holds one thread
# per lookup until it answers, and past this many a new request waits for a free one (within its deadline)
# instead of starting yet another thread.
MAX_RESOLVING = 16


class OutboundError(Exception):
    """The request could not be made or got no HTTP answer (refused target, DNS, connect, timeout)."""


class ForbiddenTarget(OutboundError):
    """A partner-supplied URL points at a private or loopback address and that is not allowed here."""


class TlsHandshakeError(urllib3.exceptions.SSLError):
    """No TLS session with the partner (a failed handshake, a certificate we don't trust): raised before any
    HTTP byte of the request was written. urllib3 calls every TLS error SSLError, also one while the answer is
    read after the request went out; this one tells them apart (emsp/services/commands.py: was it sent?)."""


class ResolveTimeout(socket.gaierror):
    """The host's name was not resolved before the request's deadline: a failed lookup, as the resolver's own
    timeout is (EAI_AGAIN), so a request that failed so is told apart as never sent (emsp/services/commands.py)."""


class BodyTooLarge(OutboundError):
    """The answer's body, decompressed, is larger than we hold (OUTBOUND_MAX_BODY_BYTES): not read further."""


@dataclass
class OutboundResponse:
    status: int
    headers: dict[str, str]
    content: bytes
    elapsed_ms: int
    request_id: str
    correlation_id: str
    request_body: bytes = b""
    _json: Any = field(default=None, repr=False)

    def json(self) -> Any:
        if self._json is None:
            self._json = orjson.loads(self.content)
        return self._json

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass(frozen=True)
class _Pin:
    host: str  # as urllib3 will name the connection's host (lower case, IDNA, no brackets, no trailing dot)
    addresses: tuple[str, ...]  # the checked addresses, in resolver order


# The pin of the request this thread (or task) is making. A context variable, not a module global or an
# attribute of the shared pool: web and worker threads share `_pool`, and one thread's pin must never
# steer another thread's connection.
_pin: ContextVar[_Pin | None] = ContextVar("outbound_pin", default=None)

# When the request this thread (or task) is making must be done, on the time.monotonic() clock; None outside send().
_deadline: ContextVar[float | None] = ContextVar("outbound_deadline", default=None)


def _capped(timeout: Any) -> Any:
    """`timeout` (a socket timeout: seconds, or None for none), no longer than the time left before this
    request's deadline. Unchanged outside send()."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = max(deadline - time.monotonic(), _LEAST_WAIT_SECONDS)
    return left if not isinstance(timeout, int | float) else min(timeout, left)


class _DeadlineReader(io.RawIOBase):
    """The socket reader under an answer's buffered file: each read from the socket waits only for the time left
    before the request's deadline, and none starts once it has passed. http.client reads the status line, the
    headers, chunk sizes and the body through this file, so a peer dripping any of them is cut off at the
    deadline: the socket's timeout (urllib3's read timeout) bounds each recv, not all of them together."""

    def __init__(self, raw: socket.SocketIO, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._deadline = deadline

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request's deadline passed")  # urllib3 makes it a ReadTimeoutError
        self._sock.settimeout(left)
        return self._raw.readinto(buffer)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._raw.close()  # lets the socket close once its connection has closed it too (socket.makefile)


class _DeadlineHTTPResponse(http.client.HTTPResponse):
    """http.client's answer, read through a _DeadlineReader when made inside send()."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)  # type: ignore[arg-type]
        deadline = _deadline.get()
        if deadline is not None:
            # Nothing has been read yet: the file's buffer is empty, and detach() hands over its reader unclosed.
            self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline))  # type: ignore[arg-type]


def _host_key(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


class _PinnedConnectionMixin:
    """Opens the socket to the pinned addresses instead of resolving `host` again; everything else (Host
    header, SNI, certificate hostname check) still uses `host`, which stays the hostname."""

    host: str
    port: int
    source_address: tuple[str, int] | None
    socket_options: Any
    response_class = _DeadlineHTTPResponse

    # The connection's timeout, as urllib3 sets it (connect, then read), is read no longer than the time left
    # before the deadline: when it connects (to each address), and when it sets the socket's timeout to wait for
    # the answer. While the request is sent, the socket waits for the time left (send below).
    @property
    def timeout(self) -> Any:
        return _capped(self._timeout_set)

    @timeout.setter
    def timeout(self, value: Any) -> None:
        self._timeout_set = value

    def _new_conn(self) -> socket.socket:
        sock = self._new_socket()
        # The TLS handshake waits no longer than the connect timeout, nor than the time left after connecting.
        sock.settimeout(self.timeout)
        return sock

    def send(self, data: Any) -> None:
        """http.client's send of the request's headers and of each piece of its body, waiting for the time left
        before the deadline: the socket's timeout bounds a whole sendall, and urllib3 leaves it at the connect
        timeout while the request is sent, which cut a large body flowing steadily to a slow reader (a big
        on_search to a slow BAP) after 3 s (2 s for a quiet BAP), on every retry alike."""
        if self.sock is None and self.auto_open:  # type: ignore[attr-defined]
            self.connect()  # type: ignore[attr-defined]  # a new plain connection, at its first send
        if self.sock is not None and _deadline.get() is not None:
            self.sock.settimeout(_capped(None))
        super().send(data)  # type: ignore[misc]

    def _new_socket(self) -> socket.socket:
        pin = _pin.get()
        if pin is None:  # private networks allowed: resolved here (within the deadline), as urllib3 would
            addresses = self._resolved()
        elif _host_key(self.host) != pin.host:
            # Only the checked host may use its pin; anything else (a proxy, a redirect) fails closed.
            raise NewConnectionError(self, f"refusing to connect to {self.host}: the checked host is {pin.host}")  # type: ignore[arg-type]
        else:
            addresses = pin.addresses
        error: OSError | None = None
        for address in addresses:  # like urllib3: try each address in turn, report the last failure
            try:
                # An IP literal: urllib3's getaddrinfo call on it parses, it does not query DNS.
                sock = urllib3_connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                error = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        if isinstance(error, TimeoutError):
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from error
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error  # type: ignore[arg-type]

    def _resolved(self) -> tuple[str, ...]:
        """The host's addresses as urllib3 looks them up (its address family setting, stream sockets), the lookup
        waited for no longer than the time left before the deadline; its errors as urllib3 raises them."""
        family = urllib3_connection.allowed_gai_family()
        try:
            infos = _getaddrinfo(self.host.strip("[]"), self.port, family, socket.SOCK_STREAM)
        except socket.gaierror as exc:  # a ResolveTimeout too: send() then says the deadline passed
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        if not infos:
            raise NewConnectionError(self, "Failed to establish a new connection: getaddrinfo returns an empty list")  # type: ignore[arg-type]
        return tuple(dict.fromkeys(info[4][0] for info in infos))


class _HandshakeMarkedMixin:
    """An HTTPS connection whose TLS failures while connecting are TlsHandshakeError, a handshake that does not
    finish in time too: Python raises that as a socket timeout (TimeoutError "The handshake operation timed out"),
    not an SSLError, which urllib3 made a ReadTimeoutError, as if the request might have gone out."""

    host: str
    _tcp_connected = False  # within connect(): the TCP connection is made, the TLS handshake under way
    _handshake_wait: float | None = None  # how long the handshake may take (the socket's timeout then)

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self._tcp_connected, self._handshake_wait = True, sock.gettimeout()
        return sock

    def connect(self) -> None:
        self._tcp_connected = False
        try:
            super().connect()  # type: ignore[misc]
        except (ssl.SSLError, urllib3.exceptions.SSLError) as exc:  # ssl.CertificateError is an ssl.SSLError
            if isinstance(exc, TlsHandshakeError):
                raise
            raise TlsHandshakeError(f"TLS handshake with {self.host} failed: {exc}") from exc
        except TimeoutError as exc:
            # Only once connected: a TCP connect that times out is urllib3's ConnectTimeoutError (not a TimeoutError).
            if not self._tcp_connected:
                raise
            wait = f" within {self._handshake_wait:.3g} s" if self._handshake_wait is not None else ""
            raise TlsHandshakeError(
                f"TLS handshake with {self.host} did not finish{wait} (the connect timeout, or the time left before"
                f" the request's deadline if less; {exc}): no request was sent"
            ) from exc


# Named like urllib3's own classes: their names appear in error texts (logged, and carried by OutboundError),
# which read exactly as before.
_PinnedHTTPConnection = type("HTTPConnection", (_PinnedConnectionMixin, HTTPConnection), {})
_PinnedHTTPSConnection = type("HTTPSConnection", (_HandshakeMarkedMixin, _PinnedConnectionMixin, HTTPSConnection), {})
_PinnedHTTPConnectionPool = type("HTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": _PinnedHTTPConnection})
_PinnedHTTPSConnectionPool = type(
    "HTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": _PinnedHTTPSConnection}
)


# urllib3 directly, not a requests.Session over it: a profile of the Beckn worker showed requests' own layers
# (settings merging, hooks, cookies, adapters) costing as much CPU as urllib3's request itself, on every callback.
# What requests gave is kept: certificate verification against certifi's bundle, pools of 10 connections per
# host (not blocking), no retries, no redirects, no proxies from the environment (urllib3 reads none), and the
# same Accept headers on the wire. requests' session cookie jar, shared by every partner, is gone.
_pool = urllib3.PoolManager(num_pools=10, maxsize=10, cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
_pool.pool_classes_by_scheme = {"http": _PinnedHTTPConnectionPool, "https": _PinnedHTTPSConnectionPool}
_DEFAULT_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate"}


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _is_private(address: str) -> bool:
    """Not a public unicast address. `is_global` as well as the named ranges: 100.64.0.0/10 (shared address space:
    carrier-grade NAT, Tailscale, Alibaba Cloud's metadata service at 100.100.100.200) is neither private nor
    reserved to Python, and signed callbacks had been sent there. An IPv4 address mapped into IPv6, or behind the
    NAT64 prefix, is judged as itself. Multicast is checked apart: 224.0.0.1 counts as global."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    elif isinstance(ip, ipaddress.IPv6Address) and ip in NAT64:
        # An IPv4 address behind the well-known NAT64 prefix (RFC 6052: what DNS64 gives an IPv6-only host for
        # every IPv4-only peer), judged as that address: Python counts the whole prefix reserved.
        ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    named = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
    return named or not ip.is_global


def _resolve(host: str) -> tuple[str, ...]:
    """The host's addresses, in resolver order, reused for up to RESOLVE_TTL_SECONDS."""
    return _resolve_cached(host, int(time.monotonic() // RESOLVE_TTL_SECONDS))


@lru_cache(maxsize=1024)
def _resolve_cached(host: str, _period: int) -> tuple[str, ...]:
    try:
        infos = _getaddrinfo(host, None)
    except ResolveTimeout as exc:  # not cached: the next request looks the name up again
        raise OutboundError(f"deadline: {exc.strerror}") from exc
    except socket.gaierror as exc:
        raise OutboundError(f"cannot resolve {host}: {exc}") from exc
    return tuple(dict.fromkeys(info[4][0] for info in infos))


# A slot for each lookup under way (MAX_RESOLVING): taken before its thread starts, given back when it ends.
_resolving = threading.BoundedSemaphore(MAX_RESOLVING)


def _renew_resolving() -> None:
    """In a child process just forked: none of the parent's lookups is under way here (its threads were not
    copied), nor will give its slot back."""
    global _resolving
    _resolving = threading.BoundedSemaphore(MAX_RESOLVING)


os.register_at_fork(after_in_child=_renew_resolving)


def _getaddrinfo(host: str, port: Any, *args: Any) -> list[tuple[Any, ...]]:
    """socket.getaddrinfo, waited for no longer than the time left before this request's deadline, then
    ResolveTimeout: the C library's lookup can't be interrupted, so it runs in a thread of its own, which goes on
    until the resolver answers (its answer unused). Called as is outside send(), and for an IP address (parsed,
    not looked up)."""
    deadline = _deadline.get()
    if deadline is None or _is_address(host):
        return socket.getaddrinfo(host, port, *args)
    slots = _resolving
    if not slots.acquire(timeout=max(deadline - time.monotonic(), 0)):
        raise ResolveTimeout(
            socket.EAI_AGAIN, f"resolving {host}: {MAX_RESOLVING} lookups still under way at the request's deadline"
        )
    answer: futures.Future[list[tuple[Any, ...]]] = futures.Future()

    def look_up() -> None:
        try:
            answer.set_result(socket.getaddrinfo(host, port, *args))
        except BaseException as exc:  # handed to the caller, if it still waits
            answer.set_exception(exc)
        finally:
            slots.release()

    threading.Thread(target=look_up, name="outbound-resolve", daemon=True).start()
    futures.wait([answer], timeout=max(deadline - time.monotonic(), 0))
    if not answer.done():
        raise ResolveTimeout(
            socket.EAI_AGAIN, f"resolving {host} took longer than the time left before the request's deadline"
        )
    return answer.result()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_target(url: str) -> tuple[str, ...] | None:
    """Refuse URLs that are not http(s) or that resolve to a private address (SSRF, OWASP API7).

    Returns the checked addresses, which `send()` connects to, or None when private networks are allowed
    (then nothing is resolved here: the connection resolves the name, within the request's deadline too)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ForbiddenTarget(f"not an http(s) URL: {url!r}")
    if settings.ALLOW_PRIVATE_NETWORKS:
        return None
    addresses = _resolve(parts.hostname)
    for address in addresses:
        if _is_private(address):
            raise ForbiddenTarget(f"{parts.hostname} resolves to a private address ({address})")
    return addresses


def _pin_for(url: str, addresses: tuple[str, ...]) -> _Pin:
    # Name the host exactly as the connection will: urllib3's parsing of the same URL (IDNA, lower case).
    return _Pin(host=_host_key(parse_url(url).host or ""), addresses=addresses)


def send(
    method: str,
    url: str,
    *,
    json: Any = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
    request_id: str | None = None,
    correlation_id: str | None = None,
) -> OutboundResponse:
    """Make one HTTP request. Raises OutboundError when no HTTP answer came back; any status is returned."""
    # The whole request's time (resolving the name, connect, TLS, send, the answer's headers and body), not each
    # socket read's.
    seconds = timeout if timeout is not None else settings.OUTBOUND_TIMEOUT_SECONDS
    started = time.monotonic()
    deadline = started + seconds
    deadline_token = _deadline.set(deadline)
    try:
        checked = check_target(url)
    finally:
        _deadline.reset(deadline_token)
    request_id = request_id or str(uuid.uuid4())
    inherited = correlation_id_var.get()
    correlation_id = correlation_id or (inherited if inherited != "-" else request_id)
    # Case-insensitive, as requests merged them: a caller's "content-type" replaces ours, not joins it.
    all_headers = HTTPHeaderDict(
        {
            **_DEFAULT_HEADERS,
            "X-Request-ID": request_id,
            "X-Correlation-ID": correlation_id,
            "User-Agent": "open-emsp/0.1",
        }
    )
    if json is not None:
        body = orjson.dumps(json)
        all_headers["Content-Type"] = "application/json"
    for name, value in (headers or {}).items():
        all_headers[name] = value
    token = deadline_token = None
    try:
        # Set even when None, so that no pin from an enclosing context applies to this request.
        token = _pin.set(_pin_for(url, checked) if checked is not None else None)
        deadline_token = _deadline.set(deadline)
        response = _pool.request(
            method,
            url,
            body=body,
            headers=all_headers,
            timeout=urllib3.Timeout(connect=min(settings.OUTBOUND_CONNECT_TIMEOUT_SECONDS, seconds), read=seconds),
            redirect=False,
            retries=False,
            preload_content=False,  # read below, in chunks and up to a cap
            decode_content=True,
        )
        content = _read_capped(response, max_body_bytes(), deadline)
    except OutboundError as exc:  # the body too large, or the deadline passed while it came
        log.warning("%s %s failed: %s", method, url, exc)
        raise
    except (HTTPError, OSError, ValueError, TypeError) as exc:  # http.client refusing a header, its value or a URL
        log.warning("%s %s failed: %s", method, url, exc)
        if time.monotonic() >= deadline:
            raise OutboundError(f"deadline: no full answer within {seconds:g} s ({type(exc).__name__}: {exc})") from exc
        raise OutboundError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if deadline_token is not None:
            _deadline.reset(deadline_token)
        if token is not None:
            _pin.reset(token)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    log.info("%s %s -> %s in %d ms", method, url, response.status, elapsed_ms)
    return OutboundResponse(
        status=response.status,
        headers=dict(response.headers),
        content=content,
        elapsed_ms=elapsed_ms,
        request_id=request_id,
        correlation_id=correlation_id,
        request_body=body or b"",
    )


def max_body_bytes() -> int:
    """The cap on an answer's decompressed body: settings.OUTBOUND_MAX_BODY_BYTES, else DEFAULT_MAX_BODY_BYTES."""
    return int(getattr(settings, "OUTBOUND_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))


def _read_capped(response: urllib3.BaseHTTPResponse, cap: int, deadline: float) -> bytes:
    """The body, decompressed as it is read (urllib3 inflates no more than each read asks for), refused once
    more than `cap` bytes came or once the deadline (time.monotonic()) passed before it ended: the connection
    is closed then, not drained nor handed back with a body unread."""
    try:
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read(min(_READ_CHUNK_BYTES, cap + 1 - size)):
            size += len(chunk)
            if size > cap:
                raise BodyTooLarge(f"answer larger than the {cap} bytes we read (decompressed), not read further")
            if time.monotonic() >= deadline:
                raise OutboundError("deadline: the answer's body had not ended when the request's time was up")
            chunks.append(chunk)
    except BaseException:
        response.close()  # a body left unread: this connection is not reused
        response.release_conn()
        raise
    response.release_conn()
    return b"".join(chunks)
