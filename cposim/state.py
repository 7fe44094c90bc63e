"""In-memory state of the simulator: catalogue, sessions, CDRs, tokens, command log, peer and faults."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .catalogue import load_locations_file, synthetic_locations, tariff_profile
from .common import ci, clone, iso, new_token, token_candidates, utcnow
from .config import SimConfig

WE_ARE_SERVER = "emsp_registered_with_us"
WE_ARE_CLIENT = "we_registered_with_emsp"


@dataclass
class Peer:
    """The registered eMSP: its endpoints and the tokens in both directions."""

    versions_url: str
    version_url: str
    endpoints: list[dict[str, Any]]
    token_out: str  # what we send to the eMSP
    token_in: str  # what the eMSP sends to us
    roles: list[dict[str, Any]]
    direction: str
    registered_at: str = field(default_factory=lambda: iso(utcnow()))

    def endpoint(self, identifier: str, role: str | None = None) -> str | None:
        """URL of the eMSP module `identifier`, preferring the given interface role."""
        hits = [e for e in self.endpoints if str(e.get("identifier", "")).lower() == identifier.lower()]
        if role:
            for e in hits:
                if str(e.get("role", "")).upper() == role:
                    return str(e["url"])
        return str(hits[0]["url"]) if hits else None

    def party(self) -> tuple[str | None, str | None]:
        """(country_code, party_id) of the eMSP role, for routing headers."""
        for r in self.roles:
            if str(r.get("role", "")).upper() == "EMSP":
                return r.get("country_code"), r.get("party_id")
        if self.roles:
            return self.roles[0].get("country_code"), self.roles[0].get("party_id")
        return None, None


class Store:
    """All mutable state behind one re-entrant lock; objects are stored as OCPI dicts."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.lock = threading.RLock()
        tariffs = tariff_profile(cfg.tariff_profile, cfg)
        if cfg.locations_file:
            locations, tariffs = load_locations_file(cfg.locations_file, cfg, tariffs)
        else:
            locations = synthetic_locations(cfg, tariffs)
        self.tariffs: dict[str, dict[str, Any]] = {ci(t["id"]): t for t in tariffs}
        self.locations: dict[str, dict[str, Any]] = {ci(loc["id"]): loc for loc in locations}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.cdrs: dict[str, dict[str, Any]] = {}
        self.cdr_locations: dict[str, str | None] = {}
        self.tokens: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.commands: list[dict[str, Any]] = []
        self.reservations: dict[tuple[str, str], dict[str, Any]] = {}
        self.peer: Peer | None = None
        self.token_a = cfg.token_a or new_token()
        self.token_a_valid = True
        self.emsp_token_a: str | None = None
        self.pending_tokens: set[str] = set()  # our token B while our own credentials POST is in flight
        self.faults: dict[str, Any] = dict(cfg.faults)
        self.last_registration_error: str | None = None

    # --- auth -------------------------------------------------------------------------------------

    def _caller(self, header: str | None) -> tuple[str, str] | None:
        """(who, the plain token used) for a token we know: who is 'peer' or 'token_a'."""
        with self.lock:
            for cand in token_candidates(header):
                if self.peer and cand == self.peer.token_in:
                    return "peer", cand
                if (self.token_a_valid and cand == self.token_a) or cand in self.pending_tokens:
                    return "token_a", cand
        return None

    def identify(self, header: str | None) -> str | None:
        """Who is calling: 'peer' (registered eMSP token), 'token_a', or None (unknown/missing)."""
        caller = self._caller(header)
        return caller[0] if caller else None

    def caller_token(self, header: str | None) -> str | None:
        """The plain token the caller used, if it is one we know."""
        caller = self._caller(header)
        return caller[1] if caller else None

    def routing_headers(self, to_cc: str | None = None, to_pid: str | None = None) -> dict[str, str]:
        """OCPI routing headers from us to `to_cc`/`to_pid`, by default to the registered eMSP's role."""
        if not (to_cc and to_pid):
            with self.lock:
                peer = self.peer
            to_cc, to_pid = peer.party() if peer else (None, None)
        headers = {"OCPI-from-country-code": self.cfg.country_code, "OCPI-from-party-id": self.cfg.party_id}
        if to_cc and to_pid:
            headers["OCPI-to-country-code"] = str(to_cc)
            headers["OCPI-to-party-id"] = str(to_pid)
        return headers

    # --- lookups ----------------------------------------------------------------------------------

    def location(self, location_id: str) -> dict[str, Any] | None:
        """Stored Location by id (case-insensitive), not a copy."""
        return self.locations.get(ci(location_id))

    @staticmethod
    def evse(location: dict[str, Any], evse_uid: str) -> dict[str, Any] | None:
        """EVSE of a Location by uid (case-insensitive)."""
        for evse in location.get("evses") or []:
            if ci(evse["uid"]) == ci(evse_uid):
                return evse
        return None

    @staticmethod
    def connector(evse: dict[str, Any], connector_id: str) -> dict[str, Any] | None:
        """Connector of an EVSE by id (case-insensitive)."""
        for conn in evse.get("connectors") or []:
            if ci(conn["id"]) == ci(connector_id):
                return conn
        return None

    def tariff(self, tariff_id: str) -> dict[str, Any] | None:
        """Stored Tariff by id."""
        return self.tariffs.get(ci(tariff_id))

    def session(self, session_id: str) -> dict[str, Any] | None:
        """Stored Session by id."""
        return self.sessions.get(ci(session_id))

    # --- mutations --------------------------------------------------------------------------------

    def set_evse_status(self, location_id: str, evse_uid: str, status: str) -> dict[str, Any] | None:
        """Set an EVSE status and bump EVSE + Location last_updated; returns the PATCH body or None."""
        with self.lock:
            loc = self.location(location_id)
            evse = self.evse(loc, evse_uid) if loc else None
            if evse is None or loc is None:
                return None
            now = iso(utcnow())
            evse["status"] = status
            evse["last_updated"] = now
            loc["last_updated"] = now
            return {"status": status, "last_updated": now}

    def touch(self, n: int) -> list[str]:
        """Bump last_updated of the n least recently updated Locations (no push: found by pulling)."""
        with self.lock:
            ordered = sorted(self.locations.values(), key=lambda loc: (loc["last_updated"], loc["id"]))
            now = iso(utcnow())
            touched = []
            for loc in ordered[: max(0, n)]:
                loc["last_updated"] = now
                touched.append(loc["id"])
            return touched

    def log_command(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append to the command log and return the stored entry."""
        with self.lock:
            self.commands.append(entry)
            return entry

    # --- views ------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Object counts for /_sim/state."""
        with self.lock:
            return {
                "locations": len(self.locations),
                "evses": sum(len(loc.get("evses") or []) for loc in self.locations.values()),
                "tariffs": len(self.tariffs),
                "sessions": len(self.sessions),
                "cdrs": len(self.cdrs),
                "tokens": len(self.tokens),
                "commands": len(self.commands),
                "reservations": len(self.reservations),
            }

    def snapshot(self, name: str) -> list[dict[str, Any]]:
        """Deep copy of one collection, for the control API."""
        with self.lock:
            if name == "locations":
                return clone(list(self.locations.values()))
            if name == "tariffs":
                return clone(list(self.tariffs.values()))
            if name == "sessions":
                return clone(list(self.sessions.values()))
            if name == "cdrs":
                return clone(list(self.cdrs.values()))
            if name == "tokens":
                return clone(list(self.tokens.values()))
            if name == "commands":
                return clone(self.commands)
            if name == "reservations":
                return clone(list(self.reservations.values()))
        raise KeyError(name)

    def token_view(self) -> dict[str, Any]:
        """token_a/b/c in handshake terms (B: sent by the credentials client, C: issued by the server)."""
        with self.lock:
            peer = self.peer
            out: dict[str, Any] = {
                "token_a": self.token_a if self.token_a_valid else None,
                "token_b": None,
                "token_c": None,
            }
            if peer is None:
                return out
            if peer.direction == WE_ARE_SERVER:
                out.update(token_b=peer.token_out, token_c=peer.token_in)
            else:
                out.update(
                    token_a=self.token_a if self.token_a_valid else None,
                    token_b=peer.token_in,
                    token_c=peer.token_out,
                    emsp_token_a=self.emsp_token_a,
                )
            out["token_in"] = peer.token_in
            out["token_out"] = peer.token_out
            return out
