"""The baseline of issue 15's ACK figure: the least a BPP must do to ACK a signed Beckn request, as a bare WSGI app
under the same gunicorn. It reads the body, parses the Authorization header, verifies the Ed25519 signature over
the BLAKE2b digest of the raw bytes (our own pure `beckn.signing`, no Django), and answers the ACK bytes. No
parsing of the envelope, no duplicate check, no queue, no log, no metrics: what it lacks is what the platform's
figure pays for, and `bench_beckn.py --part ack` prints the ratio of the two.

Its one trusted key comes from the environment: ACK_BASELINE_KEY_ID ("subscriber|key|ed25519") and
ACK_BASELINE_PUBLIC_KEY (base64).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from beckn.signing import SignatureError, parse_signature_header, verify_signature

KEYS = {os.environ.get("ACK_BASELINE_KEY_ID", ""): os.environ.get("ACK_BASELINE_PUBLIC_KEY", "")}
ACK = b'{"message":{"ack":{"status":"ACK"}}}'
NACK = b'{"message":{"ack":{"status":"NACK"}},"error":{"code":"10001","message":"Invalid signature"}}'


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    try:
        header = parse_signature_header(environ.get("HTTP_AUTHORIZATION"))
        key = KEYS.get(header.key_id)
        if not key:
            raise SignatureError("unknown_key")
        verify_signature(body, header, key, now=int(time.time()), skew=30)
    except SignatureError:
        start_response("401 Unauthorized", [("Content-Type", "application/json"), ("Content-Length", str(len(NACK)))])
        return [NACK]
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(ACK)))])
    return [ACK]
