"""Log lines: JSON (production) or text (development), each with the request and correlation ids, carried
from the web request into the Celery tasks it queues and the outbound calls they make; secrets and personal
data masked before a line is written (settings.LOGGING; docs/operations.md, "Logs").

Ids into tasks: at publish the current ids travel in the task message's headers (`before_task_publish`); the
worker restores them for the task's run (`task_prerun`/`task_postrun`). A task queued outside any request (by
the beat, or by hand) gets a fresh correlation id: its own task id. `emsp.outbound.send` sends the current
correlation id and a new X-Request-ID on every call (OCPI 2.2.1 transport and format, "Unique message IDs").
"""

from __future__ import annotations

import logging
import logging.config
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

from emsp.middleware import correlation_id_var, request_id_var

NONE = "-"  # what an id is outside a request or task, as the text format shows it
REQUEST_ID_HEADER = "emsp_request_id"  # task message headers (Celery protocol 2 carries custom headers)
CORRELATION_ID_HEADER = "emsp_correlation_id"

# The task this thread (or greenlet) is running: (task id, task name).
task_var: ContextVar[tuple[str, str] | None] = ContextVar("celery_task", default=None)

# --- Redaction ------------------------------------------------------------------------------------------
REDACTED = "[redacted]"
# Keys whose values are secrets (headers, query parameters, JSON fields, log extras, Sentry event data). Any name
# ending in `token` or `secret` (`outgoing_token`, `incoming_token`, `csrftoken`, `key_secret`): `{P}` is the
# prefix, `[\w-]*` for a key (header names have hyphens), `\w*` in text (after a word boundary: a hyphen is one,
# and a prefix that can't cross one keeps the search linear). Names ending in `key` only after the words that make
# it secret (`api_key`, `private_key`, `signing_key`, `secret_key`, `encryption_keys`): `party_key`, `ocpi_key`,
# `uid_key` and cache keys are identifiers worth logging. A plural (`tokens`, `secrets`) is no value's name.
_CREDENTIAL_NAMES = (
    r"authorization|proxy[_-]?authorization|cookie|set[_-]?cookie|apikey"
    r"|{P}token|password|passwd|pwd|passphrase|{P}secret"
    r"|{P}(?:api|private|signing|secret|access|encryption)[_-]?keys?|signature|sessionid|dsn"
)
# Keys whose values are personal data (contact details; Beckn's Billing, Customer, Person and Contact blocks).
_PERSONAL_NAMES = r"e[_-]?mail|phone(?:[_-]?number)?|mobile|msisdn|contact|customer|billing|person"
_KEY_NAMES = _CREDENTIAL_NAMES.replace("{P}", r"[\w-]*")
_TEXT_NAMES = _CREDENTIAL_NAMES.replace("{P}", r"\w*") + "|" + _PERSONAL_NAMES
_KEY = re.compile(rf"(?:http[_-])?(?:{_KEY_NAMES}|{_PERSONAL_NAMES})", re.IGNORECASE)  # HTTP_…: WSGI names
_SCHEMES = r"Token|Bearer|Basic"  # OCPI's "Token <credentials token>", OAuth bearers, basic auth
_CREDENTIAL = r"[A-Za-z0-9._~+/=-]{6,}"

_TEXT_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    # Authorization schemes, before the name rule below (so `authorization: token …` keeps its scheme word):
    # as headers spell them, whatever follows; in any case (`authorization: token …`, `BEARER …`), unless what
    # follows is a plain lower-case word (`token expired`, `basic charging`: prose, not a credential).
    (re.compile(rf"\b({_SCHEMES})\s+{_CREDENTIAL}"), rf"\1 {REDACTED}"),
    (re.compile(rf"\b((?i:{_SCHEMES}))\s+(?![a-z]+(?![\w.~+/=-])){_CREDENTIAL}"), rf"\1 {REDACTED}"),
    # key=value, key: value, "key": "value" (headers, query strings, JSON, reprs of dicts); a value the rule
    # above masked (`Token [redacted]`) is left as it is, one with a scheme word still in clear goes whole.
    (
        re.compile(
            rf"""(?P<key>["']?\b(?:{_TEXT_NAMES})\b["']?\s*[:=]\s*)(?!(?:{_SCHEMES})\s+\[redacted\])"""
            rf"""(?P<value>"[^"]*"|'[^']*'|(?:(?:{_SCHEMES})\s+)?[^\s,;&{{}}\[\]()<>"']+)""",
            re.IGNORECASE,
        ),
        lambda m: m["key"] + (m["value"][0] + REDACTED + m["value"][0] if m["value"][0] in "\"'" else REDACTED),
    ),
    # Credentials inside URLs (scheme://user:password@host). This one and the e-mail one start only where a run of
    # their first characters starts (the lookbehinds): tried at each character of a long run (`a-a-a-…`, 100 kB
    # of it in an exception's text), each attempt reading to the run's end, they took minutes.
    (re.compile(r"(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE), rf"\1{REDACTED}@"),
    # Well-known key shapes: JWTs, Stripe keys and webhook secrets. A JWT starts only where a run of its
    # characters starts, or after a hyphen (`magic-link-eyJ…`) with no hyphen in its header: after `\b` every
    # `eyJ` behind a hyphen started a scan to the run's end (`eyJ-` 62,000 times, in a Beckn request's bap_id,
    # took 15 s).
    (
        re.compile(
            r"(?<![A-Za-z0-9_])(?:(?<=-)eyJ[A-Za-z0-9_]{5,}|(?<!-)eyJ[A-Za-z0-9_-]{5,})"
            r"\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"
        ),
        REDACTED,
    ),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{6,}|\bwhsec_[A-Za-z0-9]{6,}"), REDACTED),
    # Personal data wherever it appears: e-mail addresses, international phone numbers (+CC …).
    (re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "[email]"),
    # Each group's digits possessive: only the number of groups can step back (a number followed by " 2nd" ends
    # before it), not every way of splitting a run of digits into groups (` +` and 30 ones, 7,800 times, took
    # 4 s).
    (re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}+\)?){2,5}(?!\w)"), "[phone]"),
]
# A masked text longer than this keeps its first and last halves (a traceback's last line says what failed), each
# without the word the cut goes through, the middle replaced by `…[N characters]…`. Masked first, then cut: a cut
# made before masking had left a key or scheme word on one side and its value on the other (`Token` | `4f1c…`,
# `'password':` | `'hunter2'`, `+91` | `98450 12345`), the value matching no rule and logged in clear.
MAX_REDACTED_CHARS = 64 * 1024
# Masking reads at most this much of a text (its two ends): the rules are linear, and this bounds their cost
# whatever a caller passes in (an outside party's 256 kB id, a 20 MB body in an exception's text). Where this cut
# goes through is far from the ends the masked text keeps.
MAX_MASKED_CHARS = 4 * MAX_REDACTED_CHARS
_WHITE_SPACE = (" ", "\t", "\n", "\r")


def _cut(text: str) -> str:
    half = MAX_REDACTED_CHARS // 2
    head, tail = text[:half], text[-half:]
    head = head[: max(head.rfind(space) for space in _WHITE_SPACE) + 1]
    starts = [found for found in (tail.find(space) for space in _WHITE_SPACE) if found != -1]
    tail = tail[min(starts) :] if starts else ""
    return f"{head}…[{len(text) - len(head) - len(tail)} characters]…{tail}"


def redact_text(text: str) -> str:
    if len(text) > MAX_MASKED_CHARS:
        text = f"{text[: MAX_MASKED_CHARS // 2]} {text[-MAX_MASKED_CHARS // 2 :]}"
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return _cut(text) if len(text) > MAX_REDACTED_CHARS else text


def redact(value: Any, key: str | None = None) -> Any:
    """`value` with secrets and personal data masked: values under a sensitive key whole, strings by pattern,
    dicts and lists item by item (the same shape comes back)."""
    if key is not None and value not in (None, "", {}, []) and _KEY.fullmatch(key.replace(" ", "")):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: redact(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


# The attributes every LogRecord has; anything else on a record came from `extra=` (or a filter below).
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "request_id",
    "correlation_id",
    "task_id",
    "task_name",
    "task",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


class RedactFilter(logging.Filter):
    """Masks secrets and personal data in the message, its arguments, `extra=` fields and the traceback.
    On the handler, so it sees every record the handler writes, whichever logger it came from."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if record.name.startswith("celery") and isinstance(data, dict) and ("args" in data or "kwargs" in data):
            # Celery's task lines carry the task's arguments (a whole Beckn request with the driver's name, say):
            # the task id and name identify it, and the arguments stay out of the log.
            record.data = {k: v for k, v in data.items() if k not in ("args", "kwargs")}
        try:
            record.msg, record.args = redact_text(record.getMessage()), None
        except Exception:  # a malformed call (wrong argument count): logging reports it when formatting
            return True
        for key, value in _extras(record).items():
            setattr(record, key, redact(value, key))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


# --- Ids on every record -------------------------------------------------------------------------------
class ContextFilter(logging.Filter):
    """Puts the request and correlation ids, and inside a task its id and name, on the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.correlation_id = correlation_id_var.get()
        task = task_var.get()
        record.task_id, record.task_name = task or (None, None)
        record.task = f" task={task[1]}[{task[0]}]" if task else ""
        return True


class TextFormatter(logging.Formatter):
    """One readable line: time, level, logger, the ids (and the task, inside one), the message."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s corr=%(correlation_id)s%(task)s] %(message)s"
        )

    def format(self, record: logging.LogRecord) -> str:
        for name, default in (("request_id", NONE), ("correlation_id", NONE), ("task", "")):
            if not hasattr(record, name):  # a handler without ContextFilter
                setattr(record, name, default)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message, request_id, correlation_id,
    task_id and task_name inside a task, `extra=` fields, and exception (the traceback) with exc_type."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", NONE),
            "correlation_id": getattr(record, "correlation_id", NONE),
        }
        if getattr(record, "task_id", None):
            line["task_id"], line["task_name"] = record.task_id, record.task_name  # type: ignore[attr-defined]
        for key, value in _extras(record).items():
            line.setdefault(key, value)
        if record.exc_info or record.exc_text:
            line["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
            if record.exc_info and record.exc_info[0] is not None:
                line["exc_type"] = record.exc_info[0].__name__
        if record.stack_info:
            line["stack"] = record.stack_info
        # Objects passed in `extra=` (Django's `request`, say) are written as their text, masked like the rest.
        return orjson.dumps(
            line, default=lambda value: redact_text(str(value)), option=orjson.OPT_NON_STR_KEYS
        ).decode()


# --- Celery: the ids travel with the task ----------------------------------------------------------------
@setup_logging.connect
def _keep_django_logging(**_: Any) -> None:
    """With a receiver here Celery leaves logging alone (no root-logger hijack, no format of its own): worker
    and beat write the same lines as the web processes. Django configured it from settings.LOGGING already
    (Celery's Django fixup runs django.setup()); configure it here when that has not happened yet."""
    root = logging.getLogger()
    if not any(isinstance(f, ContextFilter) for handler in root.handlers for f in handler.filters):
        from django.conf import settings

        logging.config.dictConfig(settings.LOGGING)


@before_task_publish.connect
def _ids_into_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    correlation_id = correlation_id_var.get()
    if correlation_id != NONE:
        headers.setdefault(REQUEST_ID_HEADER, request_id_var.get())
        headers.setdefault(CORRELATION_ID_HEADER, correlation_id)


# What each running task replaced, to put back when it ends (eager tasks run inside their caller's context).
_saved: dict[str, tuple[str, str, tuple[str, str] | None]] = {}


def _header(request: Any, name: str) -> str | None:
    value = getattr(request, name, None) or (getattr(request, "headers", None) or {}).get(name)
    return value if isinstance(value, str) and value else None


@task_prerun.connect
def _ids_from_headers(task_id: str = "", task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    correlation_id = _header(request, CORRELATION_ID_HEADER)
    request_id = _header(request, REQUEST_ID_HEADER) or NONE
    if correlation_id is None:
        if correlation_id_var.get() != NONE:  # run eagerly inside a request or another task: keep its ids
            request_id, correlation_id = request_id_var.get(), correlation_id_var.get()
        else:  # queued by the beat or by hand: a fresh id, the task's own
            correlation_id = task_id
    _saved[task_id] = (request_id_var.get(), correlation_id_var.get(), task_var.get())
    request_id_var.set(request_id)
    correlation_id_var.set(correlation_id)
    task_var.set((task_id, getattr(task, "name", "?")))


@task_postrun.connect
def _ids_restored(task_id: str = "", **_: Any) -> None:
    request_id, correlation_id, task = _saved.pop(task_id, (NONE, NONE, None))
    request_id_var.set(request_id)
    correlation_id_var.set(correlation_id)
    task_var.set(task)


def current_ids() -> dict[str, str]:
    """The ids of what is running now, for error reports (emsp/sentry.py): only those that are set."""
    ids = {"request_id": request_id_var.get(), "correlation_id": correlation_id_var.get()}
    task = task_var.get()
    if task:
        ids["task_id"], ids["task_name"] = task
    return {k: v for k, v in ids.items() if v and v != NONE}
