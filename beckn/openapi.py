"""The Beckn side of our OpenAPI document (/api/schema/, /api/docs/): one POST operation per action, its request
body by reference to the official core 1.1.0 schema, the ACK/NACK answer, and the `Signature` security scheme.

Request bodies are not copied: each `Beckn<Action>Request` is `allOf` a small envelope of our own — the
context fields `beckn.parsing.parse_envelope` insists on, so the document says something useful on its own —
and a `$ref` to the request body of that path in the published core 1.1.0 OpenAPI (`CORE_SPEC`, tag
core-v1.1.0 of beckn/protocol-specifications; the same file as shared/vectors/beckn/core-1.1.0). Tools that
resolve remote references (Swagger UI, code generators, openapi-spec-validator) get the full message schema.

The view is one Django route, POST /beckn/{action}, that reads the raw body (the signature is checked over
the bytes) and has no parsers; `postprocess_schema` (a drf-spectacular POSTPROCESSING_HOOK,
emsp/settings.py) turns its one operation into one per action in `beckn.parsing.ACTIONS`. Runtime behaviour
is untouched.
"""

from __future__ import annotations

import copy
from typing import Any

from beckn.parsing import ACTIONS

CORE_SPEC = (
    "https://raw.githubusercontent.com/beckn/protocol-specifications/core-v1.1.0/api/transaction/build/transaction.yaml"
)
GENERIC_PATH = "/beckn/{action}"

SIGNATURE_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "Authorization",
    "description": (
        "BECKN-006 signature of the raw body by the BAP's registered signing key: "
        '`Signature keyId="{subscriber_id}|{unique_key_id}|ed25519",algorithm="ed25519",created="…",'
        'expires="…",headers="(created) (expires) digest",signature="…"`. A request forwarded by a gateway '
        "also carries the gateway's own signature in `X-Gateway-Authorization`. Unsigned or badly signed: "
        "401 NACK with WWW-Authenticate."
    ),
}
SIGNATURE_AUTH: list[dict[str, list[str]]] = [{"Signature": []}]


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def core_request(action: str) -> dict[str, str]:
    """The request body schema of POST /{action} in the official core 1.1.0 OpenAPI."""
    return {"$ref": f"{CORE_SPEC}#/paths/~1{action}/post/requestBody/content/application~1json/schema"}


def _request_name(action: str) -> str:
    return f"Beckn{action.capitalize()}Request"


CONTEXT: dict[str, Any] = {
    "type": "object",
    "description": "The context fields this BPP requires (core 1.1.0 Context; all optional there).",
    "required": ["domain", "action", "bap_id", "bap_uri", "transaction_id", "message_id"],
    "properties": {
        "domain": {"type": "string", "description": "One of the domains we serve (BECKN_DOMAINS)."},
        "action": {"type": "string", "description": "The action of the path."},
        "version": {"type": "string", "description": "1.1.x, when given."},
        "bap_id": {"type": "string"},
        "bap_uri": {"type": "string", "format": "uri", "description": "The BAP's registered subscriber URL."},
        "bpp_id": {"type": "string", "description": "Our subscriber id, when given."},
        "bpp_uri": {"type": "string", "format": "uri"},
        "transaction_id": {"type": "string"},
        "message_id": {"type": "string", "description": "A repeated message_id gets the same ACK, nothing else."},
        "timestamp": {"type": "string", "format": "date-time"},
        "ttl": {"type": "string", "description": "ISO 8601 duration."},
    },
}
ENVELOPE: dict[str, Any] = {
    "type": "object",
    "description": "Every Beckn request: context and message.",
    "required": ["context", "message"],
    "properties": {"context": schema_ref("BecknContext"), "message": {"type": "object"}},
}
ERROR: dict[str, Any] = {
    "type": "object",
    "description": "core 1.1.0 Error; code from BECKN-005 (e.g. 10001 invalid signature, 30000 invalid request).",
    "properties": {"code": {"type": "string"}, "paths": {"type": "string"}, "message": {"type": "string"}},
}
ACK: dict[str, Any] = {
    "type": "object",
    "description": 'The synchronous answer: {"message": {"ack": {"status": "ACK"}}}, or NACK with an error.',
    "required": ["message"],
    "properties": {
        "message": {
            "type": "object",
            "required": ["ack"],
            "properties": {
                "ack": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ACK", "NACK"]}},
                }
            },
        },
        "error": schema_ref("BecknError"),
    },
}


def _action_request(action: str) -> dict[str, Any]:
    return {
        "description": (
            f"The core 1.1.0 request body of /{action}: our envelope and the official schema "
            f"({CORE_SPEC}, path /{action})."
        ),
        "allOf": [
            schema_ref("BecknRequest"),
            {
                "type": "object",
                "properties": {"context": {"type": "object", "properties": {"action": {"enum": [action]}}}},
            },
            core_request(action),
        ],
    }


def components() -> dict[str, dict[str, Any]]:
    found = {
        "BecknContext": CONTEXT,
        "BecknRequest": ENVELOPE,
        "BecknAckResponse": ACK,
        "BecknError": ERROR,
    }
    found.update({_request_name(action): _action_request(action) for action in ACTIONS})
    return found


def postprocess_schema(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular hook: the Beckn components and the Signature scheme; POST /beckn/{action} becomes one
    operation per action, each with its own request body."""
    parts = result.setdefault("components", {})
    parts.setdefault("schemas", {}).update(components())
    parts.setdefault("securitySchemes", {})["Signature"] = SIGNATURE_SCHEME
    paths = result.get("paths", {})
    generic = paths.pop(GENERIC_PATH, None)
    if generic is None:
        return result
    for action in ACTIONS:
        operations = copy.deepcopy(generic)
        post = operations["post"]
        post["operationId"] = f"beckn_{action}"
        post["summary"] = f"{action}: answered with ACK/NACK at once, then an on_{action} callback to the BAP"
        post["parameters"] = [p for p in post.get("parameters", []) if p.get("name") != "action"]
        if not post["parameters"]:
            del post["parameters"]
        post["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema_ref(_request_name(action))}},
        }
        paths[f"/beckn/{action}"] = operations
    return result
