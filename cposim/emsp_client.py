"""Outbound calls to the eMSP: registration, pushes to its Receiver interfaces, CommandResults, RTA.

Endpoints come from the eMSP's version details learnt during the credentials handshake (either direction).
Failures are logged and returned, never retried (OCPI: the receiver recovers by pulling). Every body leaves in
the simulator's OCPI version (`--ocpi-version`, converted by versions.py).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from . import versions as wire
from .common import clone, dumps, encode_token, log, new_token
from .config import SimConfig
from .quirks import render
from .state import WE_ARE_CLIENT, Peer, Store

if TYPE_CHECKING:
    from .hub import Hub


class RegistrationError(Exception):
    """Credentials handshake failed; `code` is the OCPI status code to report (3001/3002/3003)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class CallResult:
    """Outcome of one outbound HTTP call."""

    status: int | None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """HTTP 2xx (OCPI status codes are not checked here)."""
        return self.status is not None and 200 <= self.status < 300

    def as_dict(self) -> dict[str, Any]:
        """JSON view for the control API."""
        return {"http_status": self.status, "body": self.body, "error": self.error}


def _url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(quote(str(p), safe="") for p in parts)])


def _glued_url(base: str, *parts: str) -> str:
    """The glued_push_urls fault, as extrawest-ocpi's push helper builds it: f"{endpoint_url}{cc}/{pid}/{id}",
    so an endpoint URL without a trailing "/" runs into the party (`.../locationsIN/CPA/LOC1`)."""
    return base + "/".join(quote(str(p), safe="") for p in parts)


def _data(result: CallResult) -> Any:
    body = result.body
    return body.get("data") if isinstance(body, dict) else None


class EmspClient:
    """HTTP client towards the registered eMSP."""

    hub: Hub | None = None  # --hub: we speak for the parties behind us (hub.py)

    def __init__(self, store: Store, cfg: SimConfig) -> None:
        self.store = store
        self.cfg = cfg
        self.base_url = ""  # set once the server is bound
        self.version = cfg.ocpi_version

    @property
    def versions_url(self) -> str:
        """Our own versions URL (what we hand to the eMSP)."""
        return f"{self.base_url}/ocpi/versions"

    # --- transport --------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        token: str,
        routing: bool = True,
        params: dict[str, str] | None = None,
        timeout: float = 10.0,
        what: str = "",
        sender: tuple[str, str] | None = None,
    ) -> CallResult:
        """One OCPI request with auth, ids and (for functional modules) routing headers."""
        headers = {"Authorization": encode_token(token, self.cfg.token_encoding), "Accept": "application/json"}
        if not self._fault("no_request_ids"):
            headers.update({"X-Request-ID": str(uuid.uuid4()), "X-Correlation-ID": str(uuid.uuid4())})
        if routing and self.version != "2.1.1":  # 2.1.1 has no routing headers
            headers.update(self.store.routing_headers())
            if sender:  # the party that owns what we send (behind a hub, one of its parties)
                headers.update({"OCPI-from-country-code": sender[0], "OCPI-from-party-id": sender[1]})
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = dumps(body)
        started = time.monotonic()
        try:
            resp = requests.request(method, url, data=data, headers=headers, params=params, timeout=timeout)
        except requests.RequestException as exc:
            log(f"OUT {method} {url} {what} -> ERROR {type(exc).__name__}: {exc}")
            return CallResult(None, error=f"{type(exc).__name__}: {exc}")
        ms = (time.monotonic() - started) * 1000
        try:
            parsed = resp.json() if resp.content else None
        except ValueError:
            parsed = resp.text[:500]
        status_code = parsed.get("status_code") if isinstance(parsed, dict) else None
        log(f"OUT {method} {url} {what} -> {resp.status_code} ocpi={status_code} {ms:.0f}ms")
        return CallResult(resp.status_code, parsed, dict(resp.headers))

    def _push(
        self,
        method: str,
        identifier: str,
        parts: list[str],
        body: Any,
        what: str,
        sender: tuple[str, str] | None = None,
    ) -> CallResult:
        with self.store.lock:
            peer = self.store.peer
            faults = dict(self.store.faults)
        if peer is None:
            log(f"OUT skip {what}: no eMSP registered")
            return CallResult(None, error="no eMSP registered")
        base = peer.endpoint(identifier, "RECEIVER")
        if not base:
            log(f"OUT skip {what}: eMSP has no {identifier} endpoint")
            return CallResult(None, error=f"eMSP has no {identifier} endpoint")
        if faults.get("lowercase"):
            parts = [p.lower() for p in parts]
        url = _glued_url(base, *parts) if faults.get("glued_push_urls") else _url(base, *parts)
        rendered = render(body, faults)
        result = self.call(method, url, rendered, token=peer.token_out, what=what, sender=sender)
        if faults.get("repeat_pushes"):  # a hub that lost the answer delivers the same request again
            self.call(method, url, rendered, token=peer.token_out, what=f"{what} (again)", sender=sender)
        return result

    def _fault(self, name: str) -> Any:
        with self.store.lock:
            return self.store.faults.get(name)

    def _location(self, location_id: str) -> dict[str, Any] | None:
        """A copy of our Location: 2.1.1 Sessions and CDRs carry it."""
        with self.store.lock:
            return clone(self.store.location(location_id))

    def party_of(self, location_id: str) -> tuple[str, str]:
        """The party that owns a Location: ours, or behind a hub (--hub) the party it belongs to."""
        with self.store.lock:
            loc = self.store.location(location_id)
            if loc is not None:
                return str(loc["country_code"]), str(loc["party_id"])
        return self.cfg.country_code, self.cfg.party_id

    # --- pushes -----------------------------------------------------------------------------------

    def patch_evse(self, location_id: str, evse_uid: str, patch: dict[str, Any]) -> CallResult:
        """PATCH {locations}/{cc}/{pid}/{location_id}/{evse_uid} with {status, last_updated}."""
        cc, pid = self.party_of(location_id)
        parts = [cc, pid, location_id, evse_uid]
        return self._push("PATCH", "locations", parts, patch, f"evse {evse_uid}", sender=(cc, pid))

    def put_session(self, session: dict[str, Any]) -> CallResult:
        """PUT the full Session to {sessions}/{cc}/{pid}/{id}."""
        cc, pid = self.party_of(session.get("location_id", ""))
        if self.version != "2.2.1":
            session = wire.session_out(self.version, session, self._location(session.get("location_id", "")))
        what = f"session {session['id']}"
        return self._push("PUT", "sessions", [cc, pid, session["id"]], session, what, sender=(cc, pid))

    def patch_session(self, session_id: str, patch: dict[str, Any]) -> CallResult:
        """PATCH {sessions}/{cc}/{pid}/{id} (charging_periods are appended by the receiver)."""
        with self.store.lock:
            session = self.store.session(session_id)
        cc, pid = self.party_of(session["location_id"] if session else "")
        patch = wire.session_patch_out(self.version, patch)
        return self._push("PATCH", "sessions", [cc, pid, session_id], patch, f"session {session_id}", sender=(cc, pid))

    def post_cdr(self, cdr: dict[str, Any]) -> CallResult:
        """POST the CDR to the eMSP cdrs endpoint (its response carries a Location header)."""
        if self.version != "2.2.1":
            cdr = wire.cdr_out(self.version, cdr, self._location((cdr.get("cdr_location") or {}).get("id", "")))
        sender = self.party_of((cdr.get("cdr_location") or cdr.get("location") or {}).get("id", ""))
        return self._push("POST", "cdrs", [], cdr, f"cdr {cdr['id']}", sender=sender)

    def post_command_result(self, url: str, result: dict[str, Any]) -> CallResult:
        """POST a CommandResult to the command's response_url."""
        with self.store.lock:
            peer = self.store.peer
            faults = dict(self.store.faults)
        if peer is None:
            return CallResult(None, error="no eMSP registered")
        result = wire.command_result_out(self.version, result)
        sender = self.hub.sender_of_result(url) if self.hub is not None else None  # the party commanded
        return self.call(
            "POST", url, render(result, faults), token=peer.token_out, what="command result", sender=sender
        )

    def authorize(self, token_uid: str, token_type: str, location_id: str, evse_uid: str) -> CallResult:
        """Real-time authorization: POST {tokens}/{uid}/authorize?type= with LocationReferences."""
        with self.store.lock:
            peer = self.store.peer
        if peer is None:
            return CallResult(None, error="no eMSP registered")
        base = peer.endpoint("tokens", "SENDER")
        if not base:
            return CallResult(None, error="eMSP has no tokens endpoint")
        body = {"location_id": location_id, "evse_uids": [evse_uid]}
        if self.version == "2.1.1":
            token_type = wire.token_type_211(token_type)
        return self.call(
            "POST",
            _url(base, token_uid, "authorize"),
            body,
            token=peer.token_out,
            params={"type": token_type},
            timeout=5.0,
            what="authorize",
            sender=self.party_of(location_id),
        )

    # --- credentials ------------------------------------------------------------------------------

    def fetch_endpoints(self, versions_url: str, token: str) -> tuple[str, list[dict[str, Any]]]:
        """GET the eMSP's versions and the details of our version with `token`; returns (version_url,
        endpoints)."""
        res = self.call("GET", versions_url, token=token, routing=False, what="versions")
        if not res.ok:
            raise RegistrationError(3001, f"GET versions at {versions_url} failed: {res.status or res.error}")
        versions = _data(res)
        if isinstance(versions, dict):
            versions = [versions]
        match = [v for v in versions or [] if isinstance(v, dict) and str(v.get("version")) == self.version]
        if not match:
            raise RegistrationError(3002, f"eMSP at {versions_url} offers no OCPI {self.version}")
        version_url = str(match[0]["url"])
        res = self.call("GET", version_url, token=token, routing=False, what="version details")
        details = _data(res)
        if isinstance(details, list) and details:
            details = details[0]
        if not res.ok or not isinstance(details, dict):
            raise RegistrationError(3001, f"GET version details at {version_url} failed: {res.status or res.error}")
        endpoints = [e for e in details.get("endpoints") or [] if isinstance(e, dict) and e.get("url")]
        if not endpoints:
            raise RegistrationError(3003, "eMSP version details list no endpoints")
        return version_url, endpoints

    def our_credentials(self, token: str) -> dict[str, Any]:
        """Our Credentials object carrying `token`, in our version."""
        credentials = {
            "token": token,
            "url": self.versions_url,
            "roles": [
                {
                    "role": "CPO",
                    "party_id": self.cfg.party_id,
                    "country_code": self.cfg.country_code,
                    "business_details": {"name": self.cfg.name},
                }
            ],
        }
        if self.hub is not None:
            credentials["roles"] = self.hub.credentials_roles()
        return wire.credentials_out(self.version, credentials)

    def register(self, versions_url: str, token_a: str, attempts: int = 5, pause: float = 1.0) -> Peer:
        """Register WITH an eMSP (we are the credentials client); retries while it is unreachable."""
        last: RegistrationError | None = None
        for attempt in range(1, attempts + 1):
            try:
                return self._register_once(versions_url, token_a)
            except RegistrationError as exc:
                last = exc
                log(f"register attempt {attempt}/{attempts} with {versions_url} failed: {exc.message}")
                if exc.code not in (3001,) or attempt == attempts:
                    break
                time.sleep(pause * attempt)
        assert last is not None
        with self.store.lock:
            self.store.last_registration_error = last.message
        raise last

    def _register_once(self, versions_url: str, token_a: str) -> Peer:
        version_url, endpoints = self.fetch_endpoints(versions_url, token_a)
        cred_url = next((e["url"] for e in endpoints if str(e.get("identifier")).lower() == "credentials"), None)
        if not cred_url:
            raise RegistrationError(3003, "eMSP has no credentials endpoint")
        token_b = new_token()
        with self.store.lock:
            self.store.pending_tokens.add(token_b)
        try:
            res = self.call(
                "POST",
                cred_url,
                self.our_credentials(token_b),
                token=token_a,
                routing=False,
                timeout=30.0,
                what="credentials POST",
            )
        finally:
            with self.store.lock:
                self.store.pending_tokens.discard(token_b)
        data = _data(res)
        if isinstance(data, list) and data:
            data = data[0]
        data = wire.credentials_in(self.version, data)
        status_code = res.body.get("status_code") if isinstance(res.body, dict) else None
        if not res.ok or not isinstance(data, dict) or not data.get("token") or status_code not in (None, 1000):
            raise RegistrationError(3001, f"credentials POST failed: HTTP {res.status} {res.body or res.error}")
        peer = Peer(
            versions_url=str(data.get("url") or versions_url),
            version_url=version_url,
            endpoints=endpoints,
            token_out=str(data["token"]),
            token_in=token_b,
            roles=list(data.get("roles") or []),
            direction=WE_ARE_CLIENT,
        )
        with self.store.lock:
            self.store.peer = peer
            self.store.emsp_token_a = token_a
            self.store.last_registration_error = None
        log(f"registered with eMSP {versions_url}")
        if self.hub is not None:
            self.hub.announce_later(0.0)  # mod_hub_client_info: the eMSP learns the parties behind us
        return peer
