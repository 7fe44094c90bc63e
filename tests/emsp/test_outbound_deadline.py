"""A request's timeout is one deadline for all of it (emsp/outbound.py): a peer that drips its headers or its body
is cut off near the caller's timeout, not held for as long as it keeps sending; an answer that ends in time,
however it comes, is read whole.

urllib3's timeouts apply to each socket read: with a 1 s timeout a peer sending a header line or a chunk every
0.3 s had held `outbound.send` for as long as it liked (4.2 s here, when the peer stopped by itself). Real
sockets on 127.0.0.1 only; every server stops by itself.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from emsp import outbound
from emsp.ports import CpoUnreachable
from emsp.services.commands import may_have_reached_cpo

DRIP_SECONDS = 4.0  # how long a dripping peer keeps sending before it finishes its answer
OK_BODY = b'{"status_code":1000}'

Serve = Callable[[socket.socket], None]


def _server(serve: Serve, *, tls: ssl.SSLContext | None = None, connections: int = 1) -> tuple[int, threading.Thread]:
    """A peer on 127.0.0.1 that answers `connections` connections one after the other with `serve`, then stops."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(connections)
    listener.settimeout(5)
    port = listener.getsockname()[1]

    def run() -> None:
        try:
            for _ in range(connections):
                conn, _ = listener.accept()
                conn.settimeout(5)
                try:
                    if tls is not None:
                        conn = tls.wrap_socket(conn, server_side=True)
                    serve(conn)
                except OSError:
                    pass
                finally:
                    conn.close()
        except OSError:
            pass
        finally:
            listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            raise ConnectionError("the client went away")
        data += more


def _dripping(body_drip: bool, stopped: list[float]) -> Serve:
    """The reviewer's peer: a header line, or a one-byte chunk, every 0.3 s for DRIP_SECONDS, then the rest.
    `stopped` gets how long it had been sending when it stopped (the client closed the connection, or it was done)."""

    def serve(conn: socket.socket) -> None:
        _read_request(conn)
        started = time.monotonic()
        end = started + DRIP_SECONDS
        try:
            if body_drip:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                while time.monotonic() < end:
                    conn.sendall(b"1\r\n \r\n")
                    time.sleep(0.3)
                conn.sendall(b"14\r\n" + OK_BODY + b"\r\n0\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while time.monotonic() < end:
                    conn.sendall(b"X-Slow: 1\r\n")
                    time.sleep(0.3)
                conn.sendall(b"Content-Length: 20\r\nConnection: close\r\n\r\n" + OK_BODY)
        finally:
            stopped.append(time.monotonic() - started)

    return serve


def _steady(chunks: int, every: float, *, header_lines: int = 0) -> Serve:
    """A slow but steady peer: `header_lines` header lines, then `chunks` chunks, one every `every` seconds."""

    def serve(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for n in range(header_lines):
            time.sleep(every)
            conn.sendall(f"X-Slow-{n}: 1\r\n".encode())
        conn.sendall(b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.sendall(b"1\r\n[\r\n")
        for n in range(chunks):
            time.sleep(every)
            part = (b"," if n else b"") + str(n).encode()
            conn.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        conn.sendall(b"1\r\n]\r\n0\r\n\r\n")

    return serve


def _answer(body: bytes = OK_BODY, *, delay: float = 0.0, requests: int = 1) -> Serve:
    """A plain answer after `delay`, to `requests` requests on the one (kept-alive) connection."""

    def serve(conn: socket.socket) -> None:
        for _ in range(requests):
            _read_request(conn)
            time.sleep(delay)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

    return serve


@pytest.fixture(autouse=True)
def no_pooled_connections() -> Iterator[None]:
    """Each test starts and ends without a kept-alive connection to one of its (gone) peers."""
    outbound._pool.clear()
    yield
    outbound._pool.clear()


@pytest.mark.parametrize("body_drip", [False, True], ids=["headers", "chunked-body"])
@override_settings(ALLOW_PRIVATE_NETWORKS=True, OUTBOUND_TIMEOUT_SECONDS=1.0, OUTBOUND_CONNECT_TIMEOUT_SECONDS=1.0)
def test_a_dripping_answer_is_cut_off_near_the_timeout(body_drip: bool) -> None:
    stopped: list[float] = []
    port, thread = _server(_dripping(body_drip, stopped))
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError, match="deadline"):
        outbound.send("GET", f"http://127.0.0.1:{port}/ocpi/versions", timeout=1.0)
    elapsed = time.monotonic() - started
    thread.join(10)
    assert 0.9 < elapsed < 1.5, f"the request took {elapsed:.1f} s with a 1 s timeout"  # had been 4.2 s (both)
    # The connection was closed, not kept (half read) for another request: the peer's next sends failed.
    assert stopped and stopped[0] < DRIP_SECONDS - 1, f"the peer could go on sending for {stopped[0]:.1f} s"


@override_settings(ALLOW_PRIVATE_NETWORKS=True)
def test_the_deadline_holds_over_tls_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over TLS the answer is read from the TLS socket urllib3 wraps around ours: the deadline still applies."""
    server_tls = _self_signed_tls(tmp_path, monkeypatch)
    stopped: list[float] = []
    port, thread = _server(_dripping(False, stopped), tls=server_tls)
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError, match="deadline"):
        outbound.send("GET", f"https://127.0.0.1:{port}/ocpi/versions", timeout=1.0)
    elapsed = time.monotonic() - started
    thread.join(10)
    assert 0.9 < elapsed < 1.5, f"the request took {elapsed:.1f} s with a 1 s timeout"

    # And a prompt TLS answer is read as ever (the certificate verified against the test's authority).
    port, thread = _server(_answer(), tls=server_tls)
    assert outbound.send("GET", f"https://127.0.0.1:{port}/ocpi/versions", timeout=2.0).json() == {"status_code": 1000}
    thread.join(10)


@override_settings(ALLOW_PRIVATE_NETWORKS=True)
def test_a_prompt_answer_is_read_as_before() -> None:
    port, thread = _server(_answer())
    response = outbound.send("POST", f"http://127.0.0.1:{port}/on_search", json={"a": 1}, timeout=1.0)
    thread.join(10)
    assert response.status == 200
    assert response.json() == {"status_code": 1000}


@override_settings(ALLOW_PRIVATE_NETWORKS=True)
def test_a_slow_but_steady_answer_that_ends_in_time_is_not_cut() -> None:
    """Header lines and then chunks every 0.15 s, 1.2 s in all, well past what each read would wait for alone
    (0.15 s) and within the 2.5 s timeout: read whole."""
    port, thread = _server(_steady(chunks=4, every=0.15, header_lines=4))
    started = time.monotonic()
    response = outbound.send("GET", f"http://127.0.0.1:{port}/ocpi/2.2.1/locations", timeout=2.5)
    elapsed = time.monotonic() - started
    thread.join(10)
    assert response.status == 200
    assert response.header("X-Slow-3") == "1"
    assert response.json() == [0, 1, 2, 3]
    assert elapsed > 1.0  # it really was slow


@override_settings(ALLOW_PRIVATE_NETWORKS=True)
def test_a_kept_alive_connection_gets_the_next_requests_whole_time() -> None:
    """The socket's timeout left by a request (the little time it had left) does not shorten the next one on the
    same kept-alive connection: the second answer, 0.6 s late, arrives within its own 2 s."""
    port, thread = _server(_two_answers_second_late(0.6))
    assert outbound.send("GET", f"http://127.0.0.1:{port}/one", timeout=0.3).status == 200
    time.sleep(0.1)
    second = outbound.send("GET", f"http://127.0.0.1:{port}/two", timeout=2.0)
    thread.join(10)
    assert second.json() == {"status_code": 1000}


def _two_answers_second_late(delay: float) -> Serve:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + OK_BODY

    def serve(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(answer)
        _read_request(conn)  # on the same connection (the peer takes no other): the kept-alive one was reused
        time.sleep(delay)
        conn.sendall(answer)

    return serve


@override_settings(ALLOW_PRIVATE_NETWORKS=False, OUTBOUND_CONNECT_TIMEOUT_SECONDS=1.0)
def test_connecting_to_one_checked_address_after_another_stays_within_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name with three (public) addresses none of which answers: each connect had waited the whole connect
    timeout (3 s here for a 1.5 s request); now each waits at most the time left."""
    addresses = ("93.184.215.14", "93.184.215.15", "93.184.215.16")
    monkeypatch.setattr(outbound, "_resolve", lambda host: addresses)
    waits: list[float] = []

    def create_connection(address: tuple[str, int], timeout: float, **kwargs: Any) -> socket.socket:
        waits.append(timeout)
        time.sleep(timeout)  # a connect that never completes: nothing leaves this machine
        raise TimeoutError("timed out")

    monkeypatch.setattr(outbound.urllib3_connection, "create_connection", create_connection)
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError, match="deadline") as failed:
        outbound.send("GET", "http://cpo.example/ocpi/versions", timeout=1.5)
    elapsed = time.monotonic() - started
    assert elapsed < 1.8, f"connecting took {elapsed:.1f} s with a 1.5 s timeout"
    assert waits[0] == pytest.approx(1.0)
    assert waits[1] == pytest.approx(0.5, abs=0.1)
    # Still told apart as never sent (emsp/services/commands.py reads the cause).
    assert "ConnectTimeoutError" in str(failed.value)


def _counts_as_not_sent(error: BaseException) -> bool:
    """Would a command whose request failed with `error` be taken as never having reached the CPO?"""
    try:
        raise CpoUnreachable("no CommandResponse") from error
    except CpoUnreachable as wrapped:
        return not may_have_reached_cpo(wrapped)


@pytest.mark.parametrize(
    ("connect_timeout", "timeout"), [(3.0, 1.0), (0.5, 3.0)], ids=["the-deadline", "the-connect-timeout"]
)
@override_settings(ALLOW_PRIVATE_NETWORKS=True)
def test_a_tls_handshake_that_never_completes_counts_as_not_sent(connect_timeout: float, timeout: float) -> None:
    """A peer that takes the connection and never answers the ClientHello: Python raises a socket timeout
    (TimeoutError "The handshake operation timed out"), not an SSLError. urllib3 had made it a ReadTimeoutError
    ("Read timed out. (read timeout=0.001)"), taken as a request that may have reached the CPO: a RESERVE_NOW
    became TIMEOUT, not FAILED, and a needless CANCEL_RESERVATION was sent."""
    port, thread = _server(lambda conn: time.sleep(1.5))
    started = time.monotonic()
    with (
        override_settings(OUTBOUND_CONNECT_TIMEOUT_SECONDS=connect_timeout),
        pytest.raises(outbound.OutboundError, match=r"TLS handshake with 127\.0\.0\.1 did not finish") as failed,
    ):
        url = f"https://127.0.0.1:{port}/ocpi/2.2.1/commands/RESERVE_NOW"
        outbound.send("POST", url, json={"a": 1}, timeout=timeout)
    elapsed = time.monotonic() - started
    thread.join(10)
    # Bounded as before: by the connect timeout, or the request's time if that is shorter.
    limit = min(connect_timeout, timeout)
    assert limit - 0.1 < elapsed < limit + 0.4, f"the handshake was waited for {elapsed:.1f} s (limit {limit} s)"
    assert isinstance(failed.value.__cause__, outbound.TlsHandshakeError)
    assert "Read timed out" not in str(failed.value)
    assert _counts_as_not_sent(failed.value), repr(failed.value)


@override_settings(ALLOW_PRIVATE_NETWORKS=False, OUTBOUND_CONNECT_TIMEOUT_SECONDS=0.3)
def test_a_tcp_connect_timeout_to_an_https_peer_is_still_a_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a timeout once connected is a handshake that did not finish: one while connecting stays urllib3's
    ConnectTimeoutError (also not sent), never reaching the handshake."""
    monkeypatch.setattr(outbound, "_resolve", lambda host: ("93.184.215.14",))

    def create_connection(address: tuple[str, int], timeout: float, **kwargs: Any) -> socket.socket:
        time.sleep(timeout)  # a connect that never completes: nothing leaves this machine
        raise TimeoutError("timed out")

    monkeypatch.setattr(outbound.urllib3_connection, "create_connection", create_connection)
    with pytest.raises(outbound.OutboundError, match="ConnectTimeoutError") as failed:
        outbound.send("POST", "https://cpo.example/ocpi/2.2.1/commands/RESERVE_NOW", json={"a": 1}, timeout=1.0)
    assert not isinstance(failed.value.__cause__, outbound.TlsHandshakeError)
    assert isinstance(failed.value.__cause__, outbound.ConnectTimeoutError)
    assert _counts_as_not_sent(failed.value)


# Larger than what the kernel buffers between the two sockets hold (about 3.9 MB on loopback here): sendall waits
# for the peer to read. (Shrinking the peer's receive buffer once connected stalls loopback TCP in retransmits.)
LARGE_BODY = b"{" + b'"a":1,' * (8 * 1024 * 1024 // 6) + b'"z":0}'


def _slow_reader(got: list[int], *, wait: float, answer: bool = True) -> Serve:
    """A peer (a busy BAP) that reads nothing for `wait` seconds, then reads the body and answers."""

    def serve(conn: socket.socket) -> None:
        time.sleep(wait)
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        received = len(head.split(b"\r\n\r\n", 1)[1])
        while received < length:
            part = conn.recv(min(65536, length - received))
            if not part:
                break
            received += len(part)
        got.append(received)
        if answer:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + OK_BODY)

    return serve


@pytest.mark.parametrize("scheme", ["http", "https"])
@override_settings(ALLOW_PRIVATE_NETWORKS=True, OUTBOUND_CONNECT_TIMEOUT_SECONDS=0.5)
def test_a_large_body_sent_within_the_deadline_is_not_cut(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending had been bounded by the connect timeout (urllib3 leaves the socket's timeout at it while the request
    goes out, and it bounds a whole sendall): a body larger than the kernel's buffers, to a peer that reads it more
    slowly, was cut after the connect timeout (ProtocolError 'Connection aborted.', TimeoutError) however much of
    the request's time was left: a large on_search to a slow BAP failed the same way on every retry."""
    tls = _self_signed_tls(tmp_path, monkeypatch) if scheme == "https" else None
    got: list[int] = []
    port, thread = _server(_slow_reader(got, wait=0.8), tls=tls)
    started = time.monotonic()
    response = outbound.send("POST", f"{scheme}://127.0.0.1:{port}/on_search", body=LARGE_BODY, timeout=4.0)
    elapsed = time.monotonic() - started
    thread.join(10)
    assert response.status == 200
    assert got == [len(LARGE_BODY)]
    assert elapsed > 0.8  # sending really took longer than the connect timeout (0.5 s)


@override_settings(ALLOW_PRIVATE_NETWORKS=True, OUTBOUND_CONNECT_TIMEOUT_SECONDS=0.5)
def test_a_body_the_peer_does_not_read_is_cut_at_the_deadline() -> None:
    """Sending is still bounded, by the request's time: a peer that reads none of a large body holds the request
    no longer than its timeout."""
    got: list[int] = []
    port, thread = _server(_slow_reader(got, wait=2.5, answer=False))
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError, match="deadline"):
        outbound.send("POST", f"http://127.0.0.1:{port}/on_search", body=LARGE_BODY, timeout=1.5)
    elapsed = time.monotonic() - started
    thread.join(10)
    assert 1.4 < elapsed < 2.0, f"sending took {elapsed:.1f} s with a 1.5 s timeout"
    assert got and got[0] < len(LARGE_BODY)  # the connection was closed before the whole body went out


def _self_signed_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context for 127.0.0.1 with a certificate the outbound pool is made to trust for this test."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    monkeypatch.setitem(outbound._pool.connection_pool_kw, "ca_certs", str(cert_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
