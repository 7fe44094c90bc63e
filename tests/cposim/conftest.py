"""Fixtures: the CPO simulator as a real subprocess and a tiny fake eMSP (127.0.0.1 only)."""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def auth(token: str, encoding: str = "base64") -> dict[str, str]:
    """Authorization header for an OCPI token."""
    if encoding == "raw":
        return {"Authorization": f"Token {token}"}
    return {"Authorization": "Token " + base64.b64encode(token.encode()).decode()}


def decode_auth(header: str | None) -> str | None:
    """Plain token from an Authorization header (Base64 or raw)."""
    if not header or not header.startswith("Token "):
        return None
    raw = header[6:].strip()
    try:
        decoded = base64.b64decode(raw, validate=True).decode()
    except ValueError:
        return raw
    return decoded if decoded.isprintable() else raw


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; returns its value or fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


class SimProcess:
    """`python -m cposim` (or manage.py cpo_simulator) running as a child process."""

    def __init__(self, args: list[str], log_path: Path, argv: list[str] | None = None) -> None:
        cmd = argv or [sys.executable, "-m", "cposim"]
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [*cmd, "--port", "0", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.token_a = ""
        self.versions_url = ""
        deadline = time.monotonic() + 15
        while not self.versions_url:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"simulator did not print READY; log:\n{self.log_tail()}") from None
            if line.startswith("TOKEN_A "):
                self.token_a = line.split(" ", 1)[1]
            elif line.startswith("READY "):
                self.versions_url = line.split(" ", 1)[1]
        self.base = self.versions_url.rsplit("/ocpi/", 1)[0]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def log_tail(self, n: int = 40) -> str:
        """Last lines of the simulator's stderr log."""
        self._log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-n:])

    def url(self, path: str) -> str:
        """Absolute URL on the simulator."""
        return self.base + path

    def ctl(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the /_sim/ control API (GET without body, POST with)."""
        if body is None:
            resp = requests.get(self.url("/_sim/" + path), timeout=10)
        else:
            resp = requests.post(self.url("/_sim/" + path), json=body, timeout=30)
        return resp.json()

    def stop(self) -> int | None:
        """SIGTERM and wait (kill after 5 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Factory: start a simulator with extra CLI args; all are stopped at teardown."""
    started: list[SimProcess] = []

    def factory(*args: str, argv: list[str] | None = None) -> SimProcess:
        sim = SimProcess(list(args), tmp_path / f"sim{len(started)}.log", argv=argv)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@dataclass
class Seen:
    """One request received by the fake eMSP."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    token: str | None
    at: float = field(default_factory=time.monotonic)


class FakeEmsp:
    """A minimal OCPI 2.2.1 eMSP: versions, credentials (both directions), receivers, RTA, command results."""

    COUNTRY, PARTY = "IN", "EMS"

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.cv = threading.Condition()
        self.token_a = "fake-emsp-token-a"
        self.token_b = "fake-emsp-token-b"  # what the simulator uses to call us when we register with it
        self.token_c = "fake-emsp-token-c"  # what we issue when the simulator registers with us
        self.accepted = {self.token_a, self.token_b, self.token_c}
        self.allowed_tokens: dict[str, dict[str, Any]] = {}
        self.sim_token: str | None = None  # token we use to call the simulator
        self.callback_before_reply: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def versions_url(self) -> str:
        """Our versions URL."""
        return f"{self.base}/emsp/versions"

    def details(self) -> dict[str, Any]:
        """Our version details."""
        b = f"{self.base}/emsp/2.2.1"
        return {
            "version": "2.2.1",
            "endpoints": [
                {"identifier": "credentials", "role": "SENDER", "url": f"{b}/credentials"},
                {"identifier": "locations", "role": "RECEIVER", "url": f"{b}/locations"},
                {"identifier": "sessions", "role": "RECEIVER", "url": f"{b}/sessions"},
                {"identifier": "cdrs", "role": "RECEIVER", "url": f"{b}/cdrs"},
                {"identifier": "tariffs", "role": "RECEIVER", "url": f"{b}/tariffs"},
                {"identifier": "tokens", "role": "SENDER", "url": f"{b}/tokens"},
                {"identifier": "commands", "role": "SENDER", "url": f"{b}/commands"},
            ],
        }

    def roles(self) -> list[dict[str, Any]]:
        """Our credentials roles."""
        return [
            {
                "role": "EMSP",
                "country_code": self.COUNTRY,
                "party_id": self.PARTY,
                "business_details": {"name": "Fake eMSP"},
            }
        ]

    @staticmethod
    def envelope(data: Any = None, code: int = 1000) -> dict[str, Any]:
        """OCPI envelope."""
        out: dict[str, Any] = {"status_code": code, "timestamp": "2025-01-01T00:00:00Z"}
        if data is not None:
            out["data"] = data
        return out

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no wait for a delayed ACK

            def _go(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                split = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    split.path,
                    parse_qs(split.query),
                    dict(self.headers.items()),
                    json.loads(raw) if raw else None,
                    decode_auth(self.headers.get("Authorization")),
                )
                status, body, headers = fake.respond(seen)
                with fake.cv:
                    fake.seen.append(seen)
                    fake.cv.notify_all()
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _go

            def log_message(self, *args: Any) -> None:
                pass

        return H

    def respond(self, s: Seen) -> tuple[int, Any, dict[str, str]]:
        """The fake's behaviour per path."""
        p = s.path
        if s.token not in self.accepted:
            return 401, self.envelope(None, 2000), {}
        if p == "/emsp/versions":
            return 200, self.envelope([{"version": "2.2.1", "url": f"{self.base}/emsp/2.2.1"}]), {}
        if p == "/emsp/2.2.1":
            return 200, self.envelope(self.details()), {}
        if p == "/emsp/2.2.1/credentials" and s.method == "POST":
            # the simulator registers with us: call it back with its token B BEFORE answering
            body = s.body
            versions = requests.get(body["url"], headers=auth(body["token"]), timeout=5)
            self.callback_before_reply.append(f"versions {versions.status_code}")
            vurl = versions.json()["data"][0]["url"]
            details = requests.get(vurl, headers=auth(body["token"]), timeout=5)
            self.callback_before_reply.append(f"details {details.status_code}")
            self.sim_token = body["token"]
            creds = {"token": self.token_c, "url": self.versions_url, "roles": self.roles()}
            return 200, self.envelope(creds), {}
        if p.startswith("/emsp/2.2.1/tokens/") and p.endswith("/authorize"):
            uid = p.split("/")[-2]
            if uid not in self.allowed_tokens:
                return 404, self.envelope(None, 2004), {}
            info = {
                "allowed": "ALLOWED",
                "token": self.allowed_tokens[uid],
                "authorization_reference": f"RTA-{uid}",
            }
            return 200, self.envelope(info), {}
        if p.startswith("/emsp/2.2.1/cdrs") and s.method == "POST":
            return 201, self.envelope(None), {"Location": f"{self.base}/emsp/2.2.1/cdrs/{s.body['id']}"}
        if p.startswith(("/emsp/2.2.1/locations/", "/emsp/2.2.1/sessions/", "/emsp/cmd/")):
            return 200, self.envelope(None), {}
        return 404, self.envelope(None, 2000), {}

    def register_with_sim(self, sim: SimProcess, token_b: str | None = None) -> str:
        """We register WITH the simulator (it is the credentials server); returns its Token C."""
        token_b = token_b or self.token_b
        versions = requests.get(sim.versions_url, headers=auth(sim.token_a), timeout=5).json()["data"]
        details = requests.get(versions[0]["url"], headers=auth(sim.token_a), timeout=5).json()["data"]
        cred = next(e["url"] for e in details["endpoints"] if e["identifier"] == "credentials")
        body = {"token": token_b, "url": self.versions_url, "roles": self.roles()}
        resp = requests.post(cred, json=body, headers=auth(sim.token_a), timeout=10)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert data["status_code"] == 1000, data
        self.sim_token = data["data"]["token"]
        return self.sim_token

    def requests_matching(self, method: str, path_part: str, pred: Callable[[Seen], bool] | None = None) -> list[Seen]:
        """Requests seen so far with this method whose path contains path_part."""
        with self.cv:
            return [s for s in self.seen if s.method == method and path_part in s.path and (not pred or pred(s))]

    def wait_for(
        self, method: str, path_part: str, pred: Callable[[Seen], bool] | None = None, timeout: float = 5.0
    ) -> Seen:
        """Block until a matching request arrives."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                hits = self.requests_matching(method, path_part, pred)
                if hits:
                    return hits[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {method} {path_part} within {timeout}s; seen: {[(x.method, x.path) for x in self.seen]}"
                    )
                self.cv.wait(left)

    def stop(self) -> None:
        """Shut the server down."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_emsp() -> Iterator[FakeEmsp]:
    """A running fake eMSP."""
    fake = FakeEmsp()
    yield fake
    fake.stop()


def ocpi(sim: SimProcess, method: str, path: str, token: str, **kw: Any) -> requests.Response:
    """Authenticated OCPI request to the simulator (path relative to /ocpi/2.2.1)."""
    return requests.request(method, sim.url("/ocpi/2.2.1" + path), headers=auth(token), timeout=10, **kw)


def pick_evse(
    sim: SimProcess,
    *,
    need: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    power: str | None = None,
    skip: int = 0,
) -> tuple[str, str]:
    """(location_id, evse_uid) of an AVAILABLE EVSE with/without the given capabilities."""
    found = []
    for loc in sim.ctl("locations"):
        for evse in loc["evses"]:
            caps = set(evse.get("capabilities") or [])
            if evse["status"] != "AVAILABLE" or not set(need) <= caps or caps & set(exclude):
                continue
            if power == "DC" and evse["connectors"][0]["power_type"] != "DC":
                continue
            if power == "AC" and evse["connectors"][0]["power_type"] == "DC":
                continue
            found.append((loc["id"], evse["uid"]))
    assert len(found) > skip, "no suitable EVSE in the synthetic catalogue"
    return found[skip]
