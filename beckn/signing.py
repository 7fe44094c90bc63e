"""Beckn HTTP signatures (BECKN-006, draft-cavage-http-signatures-12 profile): BLAKE2b-512 digest of the raw
body, Ed25519 over `(created)`, `(expires)` and `digest`. Pure functions, no Django."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

ALGORITHM = "ed25519"
SIGNED_HEADERS = "(created) (expires) digest"

# SignatureError.reason values; the verifier answers 401 for every one of them (BECKN-006 "Verification").
REASONS = (
    "missing",  # no Authorization / X-Gateway-Authorization header
    "malformed",  # not a `Signature k="v",...` header, or keyId/created/expires/signature unusable
    "unsupported_algorithm",  # anything but ed25519
    "algorithm_mismatch",  # `algorithm` differs from the algorithm in keyId (BECKN-006: MUST fail)
    "unsupported_headers",  # `headers` other than "(created) (expires) digest"
    "not_yet_valid",  # created in the future beyond the allowed skew
    "expired",  # expires in the past
    "unknown_key",  # no usable public key for keyId
    "lookup_budget_spent",  # keyId unknown and too many unknown keys were looked up this minute (beckn.registry)
    "bad_key",  # the public key on record is not a 32-byte Ed25519 key
    "bad_signature",  # signature does not verify over the signing string of these exact bytes
    "subscriber_mismatch",  # keyId subscriber is not the context's bap_id (used by beckn.auth)
    "not_a_gateway",  # X-Gateway-Authorization signed by a subscriber that is not a known BG (beckn.auth)
)


class SignatureError(Exception):
    """A signature header that must not be processed; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class KeyFormatError(ValueError):
    """A key that is not valid base64 Ed25519 material of an accepted length."""


@dataclass(frozen=True)
class SignatureHeader:
    key_id: str
    subscriber_id: str
    unique_key_id: str
    key_algorithm: str  # the third part of keyId
    algorithm: str  # the `algorithm` parameter (keyId's when the parameter is absent)
    created: int
    expires: int
    headers: str
    signature: str  # base64, as sent


# --- keys ------------------------------------------------------------------------------------------


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError("not valid base64") from exc


def load_private_key(b64: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from base64: the 32-byte seed (beckn-onix) or the 64-byte libsodium secret key
    seed‖public (BECKN-006, protocol-server, ondc-crypto-sdk). A 64-byte key whose public half is not the one
    its seed derives is refused: it is corrupt or two keys were spliced."""
    raw = _b64decode(b64)
    if len(raw) not in (32, 64):
        raise KeyFormatError(f"an Ed25519 private key is 32 or 64 bytes, got {len(raw)}")
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) != raw[32:]:
        raise KeyFormatError("the second half of the 64-byte key is not the public key of its seed")
    return key


def load_public_key(b64: str) -> Ed25519PublicKey:
    raw = _b64decode(b64)
    if len(raw) != 32:
        raise KeyFormatError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    return base64.b64encode(private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def seed_b64(private_key: Ed25519PrivateKey) -> str:
    """The 32-byte seed form of a private key (what beckn-onix expects)."""
    raw = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


def libsodium_b64(private_key: Ed25519PrivateKey) -> str:
    """The 64-byte libsodium form seed‖public (what BECKN-006 publishes and protocol-server expects)."""
    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(seed + public).decode()


def generate_keypair() -> tuple[str, str]:
    """A new signing key pair as (private key in the 64-byte libsodium form, public key), both base64."""
    key = Ed25519PrivateKey.generate()
    return libsodium_b64(key), public_key_b64(key)


# --- signing ---------------------------------------------------------------------------------------


def body_digest(body: bytes) -> str:
    """base64(BLAKE2b-512(body)), unkeyed (RFC 7693) — BECKN-006 "Hashing Algorithm"."""
    return base64.b64encode(hashlib.blake2b(body, digest_size=64).digest()).decode()


def signing_string(body: bytes, created: int, expires: int) -> str:
    # Exactly three lines, no trailing newline (BECKN-006 Step 1; a trailing "\n" breaks the upstream vector).
    return f"(created): {created}\n(expires): {expires}\ndigest: BLAKE-512={body_digest(body)}"


def sign_request(
    body: bytes,
    *,
    subscriber_id: str,
    unique_key_id: str,
    private_key: Ed25519PrivateKey,
    created: int,
    expires: int,
) -> str:
    """The `Authorization` header value for these exact body bytes (BECKN-006 §"Authorization header")."""
    signature = base64.b64encode(private_key.sign(signing_string(body, created, expires).encode())).decode()
    return (
        f'Signature keyId="{subscriber_id}|{unique_key_id}|{ALGORITHM}",algorithm="{ALGORITHM}",'
        f'created="{created}",expires="{expires}",headers="{SIGNED_HEADERS}",signature="{signature}"'
    )


# --- parsing ---------------------------------------------------------------------------------------

# One `name="value"` (or `name=value` for integers, as cavage-12 allows for created/expires) and its separator.
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"([^"]*)"|([^",\s]*))\s*(,|$)')
# BECKN-006: created and expires are "a Unix timestamp integer value": ASCII digits only. int() would also take
# "1_796_550_275", " 17…", "+17…" and other scripts' digits, none of which a signer means. Twelve digits reach
# the year 33658.
_TIMESTAMP = re.compile(r"\d{1,12}", re.ASCII)


def parse_signature_header(value: str | None) -> SignatureHeader:
    """Parse `Signature keyId="sub|ukid|alg",algorithm=...,created=...,expires=...,headers=...,signature=...`.

    Tolerates any parameter order, spaces around `=` and `,`, unquoted integers and a case-insensitive
    scheme; refuses duplicates, junk between parameters and missing keyId/created/expires/signature.
    Parameter names are matched case-insensitively and each may occur once (RFC 7235 §2.1): `keyId` and
    `keyid` are the same parameter, so both in one header is a duplicate, not a second key to choose from."""
    if value is None or not value.strip():
        raise SignatureError("missing", "no signature header")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "signature" or not rest.strip():
        raise SignatureError("malformed", "not a 'Signature' header")
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            raise SignatureError("malformed", f"cannot parse parameters at {rest[pos : pos + 20]!r}")
        name = match.group(1).lower()
        if name in params:
            raise SignatureError("malformed", f"duplicate parameter {name}")
        params[name] = match.group(2) if match.group(2) is not None else match.group(3)
        pos = match.end()
    for required in ("keyId", "created", "expires", "signature"):
        if not params.get(required.lower()):
            raise SignatureError("malformed", f"{required} is missing")

    # keyId = subscriber_id|unique_key_id|algorithm; BECKN-006 lets a network with one key per subscriber
    # omit unique_key_id, so `subscriber_id|algorithm` is read as an empty unique_key_id.
    parts = params["keyid"].split("|")
    if len(parts) == 3:
        subscriber_id, unique_key_id, key_algorithm = parts
    elif len(parts) == 2:
        (subscriber_id, key_algorithm), unique_key_id = parts, ""
    else:
        raise SignatureError("malformed", "keyId must be subscriber_id|unique_key_id|algorithm")
    if not subscriber_id.strip() or not key_algorithm.strip():
        raise SignatureError("malformed", "keyId has an empty subscriber_id or algorithm")
    if not (_TIMESTAMP.fullmatch(params["created"]) and _TIMESTAMP.fullmatch(params["expires"])):
        raise SignatureError("malformed", "created and expires must be Unix integer seconds")
    created, expires = int(params["created"]), int(params["expires"])
    return SignatureHeader(
        key_id=params["keyid"],
        subscriber_id=subscriber_id.strip(),
        unique_key_id=unique_key_id.strip(),
        key_algorithm=key_algorithm.strip().lower(),
        algorithm=params.get("algorithm", key_algorithm).strip().lower(),
        created=created,
        expires=expires,
        headers=" ".join(params.get("headers", SIGNED_HEADERS).lower().split()),
        signature=params["signature"],
    )


# --- verification ----------------------------------------------------------------------------------


def check_algorithm(header: SignatureHeader) -> None:
    if header.algorithm != header.key_algorithm:
        raise SignatureError("algorithm_mismatch", f"algorithm {header.algorithm}, keyId says {header.key_algorithm}")
    if header.algorithm != ALGORITHM:
        raise SignatureError("unsupported_algorithm", f"algorithm {header.algorithm} is not supported")
    if header.headers != SIGNED_HEADERS:
        raise SignatureError("unsupported_headers", f"headers must be {SIGNED_HEADERS!r}, got {header.headers!r}")


def check_window(header: SignatureHeader, *, now: int, skew: int) -> None:
    """BECKN-006: `created` in the future and `expires` in the past MUST NOT be processed.

    `created` may lead our clock by `skew` seconds (senders' clocks drift; beckn-onix #801/#818 settled on
    5 s). `expires` gets no tolerance, as in beckn-onix: the sender chose it and it is already past."""
    if header.created > now + skew:
        raise SignatureError("not_yet_valid", f"created {header.created} is after now {now} + {skew} s")
    if header.expires < now:
        raise SignatureError("expired", f"expires {header.expires} is before now {now}")


def verify_signing_string(text: str, signature_b64: str, public_key_b64: str) -> None:
    """Ed25519-verify a signing string; raises SignatureError("bad_signature" | "bad_key" | "malformed")."""
    try:
        public_key = load_public_key(public_key_b64)
    except KeyFormatError as exc:
        raise SignatureError("bad_key", f"public key on record: {exc}") from exc
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("malformed", "signature is not base64") from exc
    try:
        public_key.verify(signature, text.encode())
    except InvalidSignature as exc:
        raise SignatureError("bad_signature", "signature does not verify") from exc


def verify_signature(body: bytes, header: SignatureHeader, public_key_b64: str, *, now: int, skew: int) -> None:
    """Verify a parsed header over the raw body bytes (never a re-serialisation: BECKN-006 signs the bytes
    sent). Checks the algorithm, the validity window, then the signature; raises SignatureError."""
    check_algorithm(header)
    check_window(header, now=now, skew=skew)
    verify_signing_string(signing_string(body, header.created, header.expires), header.signature, public_key_b64)
