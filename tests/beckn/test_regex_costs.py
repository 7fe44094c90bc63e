"""What a hostile value costs in CPU: text an outside party sends (a bap_id, a search tag's value) must cost time
linear in its length in the log's masking and in the search's tag readers. CPU measured with time.process_time;
the limits are generous (the old patterns took seconds on these inputs)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.utils.module_loading import import_string

from beckn.auth import BecknAuthError, verify_beckn_request
from beckn.catalogue_details import _percent
from beckn.errors import BecknRequestError
from beckn.parsing import MAX_ID_LENGTH, _power_w
from beckn.route_search import _decimal
from emsp.logs import MAX_REDACTED_CHARS, redact_text
from tests.beckn.test_actions import last, search_message
from tests.beckn.test_route_search import _tag, route_message

pytestmark = pytest.mark.django_db

JWT_RUN = "eyJ-" * 62_000  # every `eyJ` after a hyphen started a scan to the end: 15 s
PHONE_RUNS = (" +" + "1" * 30) * 7_800  # each `+` tried every split of its ones into groups: 4 s
LIMIT = 0.5  # seconds of CPU; the old code took 3 s or more on each input below


def _cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.process_time()
    out = fn()
    return time.process_time() - started, out


class ProductionHandler(logging.Handler):
    """The console handler as settings.LOGGING builds it: its filters and the JSON formatter."""

    def __init__(self) -> None:
        super().__init__()
        conf = settings.LOGGING
        for name in conf["handlers"]["console"]["filters"]:
            self.addFilter(import_string(conf["filters"][name]["()"])())
        self.setFormatter(import_string(conf["formatters"]["json"]["()"])())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def prod_logging() -> Any:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = ProductionHandler()
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    yield handler
    root.handlers, root.level = saved


# --- the log's masking ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bap_id", [JWT_RUN, PHONE_RUNS], ids=["jwt", "phone"])
def test_unsigned_beckn_request_costs_no_cpu_for_its_bap_id(prod_logging: Any, bap_id: str) -> None:
    body = orjson.dumps({"context": {"action": "search", "bap_id": bap_id}, "message": {}})
    assert len(body) <= settings.BECKN_MAX_BODY_BYTES

    spent, response = _cpu(lambda: Client().post("/beckn/search", data=body, content_type="application/json"))

    assert response.status_code == 401
    assert prod_logging.lines
    assert spent < LIMIT
    assert all(len(line) < 10 * MAX_ID_LENGTH for line in prod_logging.lines)  # the bap_id cut to an id's length


@pytest.mark.parametrize(
    "text",
    [JWT_RUN, PHONE_RUNS, JWT_RUN[:MAX_REDACTED_CHARS], PHONE_RUNS[:MAX_REDACTED_CHARS]],
    ids=["jwt", "phone", "jwt-under-cap", "phone-under-cap"],
)
def test_masking_costs_linear_time(text: str) -> None:
    spent, masked = _cpu(lambda: redact_text(text))

    assert spent < LIMIT
    if len(text) <= MAX_REDACTED_CHARS:
        assert masked.startswith(text[:100])  # nothing in these is a secret or a phone number
    else:  # cut: a word the cut goes through is dropped, and these are one or a few long words
        assert len(masked) <= MAX_REDACTED_CHARS + 40


def test_masking_text_over_its_cap_keeps_its_ends_and_drops_the_words_cut() -> None:
    words = "word " * (MAX_REDACTED_CHARS // 5)
    text = "Traceback start " + words + "ValueError: the last line"

    masked = redact_text(text)

    assert len(masked) <= MAX_REDACTED_CHARS + 40
    assert masked.startswith("Traceback start word ") and masked.endswith("ValueError: the last line")
    assert "characters]…" in masked
    assert redact_text("x" * MAX_REDACTED_CHARS) == "x" * MAX_REDACTED_CHARS  # up to the cap, all of it


# A secret the cut goes through is not kept in part: its head would match no rule and be logged in clear.
@pytest.mark.parametrize(
    ("secret", "leak"),
    [
        ("postgres://emsp:S3cretPassw0rd@db.internal/emsp", "S3cretPassw0rd"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhc2hhQGV4YW1wbGUuY29tIn0.c2ln", "eyJzdWIiOiJhc2hh"),
        ("asha.rao@example.com", "asha.rao"),
        ("{'user': 'ops', 'password': 'S3cretPassw0rd'}", "S3cretPassw0rd"),
    ],
)
@pytest.mark.parametrize("end", ["at-the-cap", "head", "tail"])
def test_a_secret_the_cap_cuts_through_is_not_logged_in_part(secret: str, leak: str, end: str) -> None:
    half = MAX_REDACTED_CHARS // 2
    if end == "at-the-cap":  # a text the first 64 KB of which end inside the secret (a cut there had leaked it)
        cut_at = secret.index(leak) + len(leak)
        text = "x" * (MAX_REDACTED_CHARS - cut_at - 1) + " " + secret
        assert text[:MAX_REDACTED_CHARS].endswith(secret[:cut_at])
    elif end == "head":  # the cut at the head's end goes through the secret, after its leak
        cut_at = secret.index(leak) + len(leak)
        text = "x " * ((half - cut_at - 1) // 2) + "x" * ((half - cut_at - 1) % 2) + " " + secret + " y" * half
        assert text[:half].endswith(secret[:cut_at])
    else:  # the tail's cut goes through it, before its leak ends
        cut_at = secret.index(leak) + 1
        text = "y " * half + secret + " x" * ((half - (len(secret) - cut_at)) // 2)
        text += " " * ((half - (len(secret) - cut_at)) % 2)
        assert text[-half:].startswith(secret[cut_at:])
    assert leak not in redact_text(text)
    assert leak[1:] not in redact_text(text)


@pytest.mark.parametrize(
    "line",
    [
        "OTP to +91 98450 12345 2nd attempt",
        "SMS to +91-98450-12345 30s timeout",
        "call +919845012345 1st try",
        "+91 80 4567 8901 5min",
        "driver +91 98450 12345 (2x)",
    ],
)
def test_a_phone_number_before_a_word_starting_with_a_digit_is_masked(line: str) -> None:
    assert "98450" not in redact_text(line) and "4567" not in redact_text(line)


@pytest.mark.parametrize("before", ["GET /auth/magic-link-", "tok=-", "x "])
def test_a_jwt_after_a_hyphen_is_masked(before: str) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2ln"
    assert "c2lnbmF0dXJl" not in redact_text(f"{before}{jwt} 302")


@pytest.mark.parametrize(
    "text",
    [
        "-eyJaaaaa" * 8_000,
        "eyJ" + "a" * 65_000,
        " +1" * 21_000,
        ("+1" + "1" * 30 + "x") * 2_000,
        " +1 1 1 1 1 1 1 1x" * 3_600,
    ],
    ids=["hyphen-eyJ", "one-long-eyJ", "plus-ones", "ones-then-letter", "spaced-ones-then-letter"],
)
def test_the_masking_rules_cost_linear_time_on_other_shapes(text: str) -> None:
    spent, _ = _cpu(lambda: redact_text(text))
    assert spent < LIMIT


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call +91 98765 43210 now", "call [phone] now"),
        ("call +1 (555) 123-4567.", "call [phone]."),
        ("+919876543210", "[phone]"),
        ("phone +91 98765", "phone [phone]"),
        ("+91-98765-43210-x", "[phone]-x"),
        ("token eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl here", f"token {'[redacted]'} here"),
        ("jwt=eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", "jwt=[redacted]"),
        ("(eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl)", "([redacted])"),
    ],
)
def test_the_rewritten_rules_still_mask(text: str, masked: str) -> None:
    assert redact_text(text) == masked


# A keyId that is not the bap_id: the refusal's detail (logged) names the bap_id, cut to an id's length.
@override_settings(BECKN_SUBSCRIBER_ID="bpp.example.com", BECKN_REGISTRY_URL="", BECKN_SIGNATURE_SKEW_SECONDS=5)
def test_a_mismatched_bap_id_is_cut_in_the_refusal(signing_vectors: dict[str, Any], search_body: bytes) -> None:
    header = signing_vectors["vector_1_bap_search_upstream"]["authorization_header"]

    with pytest.raises(BecknAuthError) as failure:
        verify_beckn_request(search_body, {"Authorization": header}, bap_id=JWT_RUN, now=1641287875)

    assert failure.value.reason == "subscriber_mismatch"
    assert len(failure.value.detail) < 2 * MAX_ID_LENGTH


# --- search tag values ------------------------------------------------------------------------------------

HOSTILE = "1" + " " * 30_000 + "!"  # 3 s in each of the three tag readers; 250 kB of it took 197 s


@pytest.mark.parametrize("code", ["power-rating", "min-renewable-share"])
def test_a_search_tag_value_costs_linear_time(bap: Any, code: str) -> None:
    message = search_message()
    message["intent"]["item"] = {"tags": [{"descriptor": {"code": code}, "value": HOSTILE}]}

    spent, response = _cpu(lambda: bap("search", message))

    assert response.status_code == 200
    error = last(bap, "on_search")["error"]
    assert error["code"] == "30000"
    assert error["paths"].endswith(f"tags({code})")
    assert spent < LIMIT


def test_a_route_search_vehicle_value_costs_linear_time(bap: Any) -> None:
    message = route_message(_tag("battery-kwh", HOSTILE))

    spent, response = _cpu(lambda: bap("search", message))

    assert response.status_code == 200
    assert last(bap, "on_search")["error"]["code"] == "30000"
    assert spent < LIMIT


def test_a_long_tag_the_bpp_does_not_read_fails_no_search(bap: Any) -> None:
    """A BAP's own tag (a list of 500 EVSE ids, 7,499 characters) is ignored, as unknown tags are."""
    message = search_message()
    evse_ids = ",".join(f"IN*ABC*E{i:06d}" for i in range(500))
    message["intent"]["item"] = {
        "tags": [
            {"descriptor": {"code": "power-rating"}, "value": "30 kW"},
            {"descriptor": {"code": "x-bap-visited-evse-ids"}, "value": evse_ids},
        ]
    }

    bap("search", message)

    assert "error" not in last(bap, "on_search")


def _power(text: str) -> Any:
    return _power_w(text, "message.intent.tags(power-rating)")


def _share(text: str) -> Any:
    return _percent(text, "min-renewable-share")


def _kwh(text: str) -> Any:
    units = {"": 1, "kwh": 1}
    return _decimal(text, "message.intent.tags(battery-kwh)", low=0, high=1000, units=units)  # type: ignore[arg-type]


READERS = {"power": _power, "percent": _share, "decimal": _kwh}


# The tag readers themselves: a value of any length (the body's cap, 256 kB, is the only one) costs linear time.
@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize("length", [5_000, 30_000, 250_000], ids=["5k", "30k", "250k"])
@pytest.mark.parametrize("shape", ["1{}!", " {}1!", "1{}kw!"], ids=["after", "before", "unit"])
def test_a_tag_reader_costs_linear_time(reader: Callable[[str], Any], length: int, shape: str) -> None:
    text = shape.format(" " * length)

    started = time.process_time()
    with pytest.raises(BecknRequestError):
        reader(text)

    assert time.process_time() - started < LIMIT


@pytest.mark.parametrize(
    ("text", "watts"),
    [
        *[("30kW", 30_000), ("30 kW", 30_000), (">= 50 kw", 50_000), ("greater than 7.4 kw", 7_400), ("7400w", 7_400)],
        *[("50", 50_000), (" >=50 KW ", 50_000), (">50", 50_000), ("50 kwh", None), ("kw", None), ("5 0", None)],
    ],
)
def test_power_reads_what_it_read(text: str, watts: int | None) -> None:
    if watts is None:
        with pytest.raises(BecknRequestError):
            _power(text)
    else:
        assert _power(text) == watts


@pytest.mark.parametrize(
    ("text", "share"),
    [
        *[("80 %", 80), ("at least 80 percent", 80), ("min 50%", 50), (">= 80", 80), ("  ≥ 12.5 % ", 12.5), ("80", 80)],
        *[("80 % %", None), ("at least", None), ("eighty", None)],
    ],
)
def test_percent_reads_what_it_read(text: str, share: float | None) -> None:
    if share is None:
        with pytest.raises(BecknRequestError):
            _share(text)
    else:
        assert float(_share(text)) == share


@pytest.mark.parametrize(
    ("text", "kwh"),
    [("75 kwh", 75), ("7.4kwh", 7.4), ("75", 75), (" 75 KWh ", 75), ("75 k wh", None), ("75 kw", None)],
)
def test_decimal_reads_what_it_read(text: str, kwh: float | None) -> None:
    if kwh is None:
        with pytest.raises(BecknRequestError):
            _kwh(text)
    else:
        assert float(_kwh(text)) == kwh


# --- masked first, then cut ---------------------------------------------------------------------------------

HALF = MAX_REDACTED_CHARS // 2


def tail_cut_inside(word: str, after: str) -> str:
    """A text over 64 KB whose last-32 KB cut falls one character into `word`."""
    return "lorem ipsum " * 3000 + word[0] + (word[1:] + after + "x " * HALF)[:HALF]


# A cut made before masking left the key or scheme word on one side and its value on the other, in clear.
@pytest.mark.parametrize(
    ("word", "after", "secret"),
    [
        ("Bearer", " 9f8e7d6c5b4a39281706.abc ", "9f8e7d6c5b4a39281706"),
        ("Token", " 4f1c9a7e2b6d8e0f13579bdf ", "4f1c9a7e2b6d8e0f13579bdf"),  # OCPI Authorization
        ("{'password':", " 'hunter2hunter2', ", "hunter2hunter2"),  # a dict's repr
        ('{"password":', ' "hunter2hunter2", ', "hunter2hunter2"),  # JSON
        ("+91", " 98450 12345 called ", "98450 12345"),  # a driver's phone
        ('password="correct', ' horse battery staple" ', "horse battery staple"),
    ],
)
def test_a_cut_through_a_key_or_scheme_word_leaves_no_secret(word: str, after: str, secret: str) -> None:
    text = tail_cut_inside(word, after)
    assert len(text) > MAX_REDACTED_CHARS and text[-HALF:].startswith(word[1:])

    assert secret not in redact_text(text)


def test_a_cut_through_a_quoted_password_with_spaces_leaves_none_of_it() -> None:
    text = "x " * ((HALF - 30) // 2) + ' password="correct horse battery staple" ' + "y " * HALF
    assert text[:HALF].endswith("batte")

    assert "correct horse" not in redact_text(text)


def test_masking_a_huge_text_costs_bounded_time() -> None:
    for text in ("a" * 5_000_000, "a b " * 1_250_000, "Token abc " * 500_000, "+91 98450 12345 " * 300_000):
        spent, masked = _cpu(lambda text=text: redact_text(text))  # type: ignore[misc]
        assert spent < 2 * LIMIT
        assert len(masked) <= MAX_REDACTED_CHARS + 40
