"""Unwrapping the objects out of OCPI response envelopes, bare lists and JSON bytes."""

from __future__ import annotations

from typing import Any

import orjson

from ocpi.normalize.issues import Rejected


def _decode(payload: object) -> object:
    if isinstance(payload, (bytes, bytearray, memoryview, str)):
        try:
            return orjson.loads(
                payload.lstrip("\ufeff") if isinstance(payload, str) else bytes(payload).lstrip(b"\xef\xbb\xbf")
            )
        except orjson.JSONDecodeError as exc:
            raise Rejected("", f"payload is not JSON: {exc}", code="invalid_json") from None
    return payload


def _envelope_data(payload: dict[str, Any]) -> tuple[bool, object]:
    """(is_envelope, data): an OCPI response envelope has 'data' and/or status_code/timestamp."""
    if "data" in payload or ("status_code" in payload and "timestamp" in payload):
        status = payload.get("status_code")
        if isinstance(status, int) and not 1000 <= status < 2000 and payload.get("data") in (None, [], {}):
            message = payload.get("status_message") or ""
            raise Rejected("status_code", f"partner answered OCPI {status} {message}".strip(), code="ocpi_error")
        return True, payload.get("data")
    return False, payload


def unwrap_list_payload(payload: object) -> list[dict]:
    """Objects of a list response: envelope {data:[...]}, bare list, single object, nested envelopes."""
    data = _decode(payload)
    for _ in range(3):  # a hub may wrap an envelope in another one
        if isinstance(data, dict):
            is_env, inner = _envelope_data(data)
            if not is_env:
                return [data]
            data = inner
        elif isinstance(data, list) and len(data) == 1 and isinstance(data[0], (dict, list)):
            first = data[0]
            if isinstance(first, list) or ("data" in first and ("status_code" in first or "timestamp" in first)):
                data = first
            else:
                return [first]
        else:
            break
    if data is None:
        return []
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise Rejected("data", f"expected a list of objects, got {type(data).__name__}", code="invalid_payload")
    # Non-object entries (nulls, strings) carry nothing usable; the caller counts objects, not entries.
    return [item for item in data if isinstance(item, dict)]


def unwrap_object_payload(payload: object) -> dict:
    """The single object of a response/request: envelope, the object itself, or it wrapped in a list."""
    data = _decode(payload)
    for _ in range(3):
        if isinstance(data, list):
            objects = [item for item in data if isinstance(item, (dict, list))]
            if len(objects) != 1:
                raise Rejected("", f"expected one object, got a list of {len(data)}", code="invalid_payload")
            data = objects[0]
            continue
        if isinstance(data, dict):
            is_env, inner = _envelope_data(data)
            if not is_env:
                return data
            data = inner
            continue
        break
    if isinstance(data, dict):
        return data
    raise Rejected("data", f"expected an object, got {type(data).__name__}", code="invalid_payload")
