"""OCPI DateTime parsing/formatting and unwrapping of the payload shapes real partners send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from ocpi.normalize import (
    Issue,
    Rejected,
    format_ocpi_datetime,
    parse_ocpi_datetime,
    unwrap_list_payload,
    unwrap_object_payload,
)

NOON = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-25T10:00:00Z",
        "2026-11-25T10:00:00",  # no designator = UTC (types.asciidoc)
        "2026-11-25T10:00:00.000Z",
        "2026-11-25 10:00:00",  # Voltrelli
        "2026-11-25T12:00:00+02:00",
        "2026-11-25T10:00:00+00:00",
        " 2026-11-25T10:00:00z ",
    ],
)
def test_it_parses_every_utc_spelling_to_the_same_instant(text: str) -> None:
    assert parse_ocpi_datetime(text, "last_updated") == NOON


def test_it_keeps_fractional_seconds() -> None:
    dt = parse_ocpi_datetime("2025-06-21T11:20:36.504571", "x")
    assert dt == datetime(2025, 6, 21, 11, 20, 36, 504571, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026-11-25T12:00:00+02:00", "2026-11-25T10:00:00+00:00"])
def test_it_reports_offsets_because_plus_zero_is_not_utc_in_ocpi(text: str) -> None:
    issues: list[Issue] = []
    parse_ocpi_datetime(text, "start_date_time", issues=issues)
    assert [(i.path, i.code, i.fixed) for i in issues] == [("start_date_time", "datetime_offset", True)]


def test_it_does_not_report_a_missing_designator() -> None:
    issues: list[Issue] = []
    parse_ocpi_datetime("2026-11-25T10:00:00", "x", issues=issues)
    assert issues == []


@pytest.mark.parametrize("value", ["", "yesterday", "2026-13-45T10:00:00Z", None, True, {"a": 1}, -5])
def test_it_rejects_garbage_datetimes(value: object) -> None:
    with pytest.raises(Rejected) as exc:
        parse_ocpi_datetime(value, "evses[0].last_updated")
    assert exc.value.path == "evses[0].last_updated"


def test_it_reads_epoch_milliseconds() -> None:
    assert parse_ocpi_datetime(1_795_600_800_000, "x") == datetime.fromtimestamp(1_795_600_800, UTC)


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (NOON, "2026-11-25T10:00:00Z"),
        (NOON.replace(microsecond=120_000), "2026-11-25T10:00:00.120Z"),
        (NOON.replace(microsecond=999), "2026-11-25T10:00:00Z"),  # sub-millisecond: truncated, never rounded up
        (datetime(2026, 11, 25, 11, 0, tzinfo=timezone(timedelta(hours=1))), "2026-11-25T10:00:00Z"),
        (datetime(2026, 11, 25, 10, 0), "2026-11-25T10:00:00Z"),  # naive = UTC, like an input without designator
    ],
)
def test_it_formats_strictly(dt: datetime, text: str) -> None:
    assert format_ocpi_datetime(dt) == text


def test_formatting_round_trips_at_millisecond_precision() -> None:
    text = "2025-06-21T09:31:58.990Z"
    assert format_ocpi_datetime(parse_ocpi_datetime(text, "x")) == text


LOC = {"id": "LOC1", "name": "x"}


@pytest.mark.parametrize(
    "payload",
    [
        {"data": [LOC], "status_code": 1000, "status_message": "Success", "timestamp": "2026-11-25T10:00:00Z"},
        [LOC],
        LOC,  # a single object where a list is due
        {"data": LOC, "status_code": 1000, "timestamp": "2026-11-25T10:00:00Z"},
        [{"data": [LOC], "status_code": 1000, "timestamp": "2026-11-25T10:00:00Z"}],  # list around the envelope
        {"data": {"data": [LOC], "status_code": 1000}, "status_code": 1000},  # hub wrapping an envelope
        b"\xef\xbb\xbf" + orjson.dumps({"data": [LOC]}),  # bytes with a UTF-8 BOM (Punkt)
        [[LOC]],
    ],
)
def test_it_unwraps_every_list_shape(payload: object) -> None:
    assert unwrap_list_payload(payload) == [LOC]


def test_it_unwraps_an_empty_page() -> None:
    assert unwrap_list_payload({"data": [], "status_code": 1000, "timestamp": "2026-11-25T10:00:00Z"}) == []
    assert unwrap_list_payload({"data": None, "status_code": 1000, "timestamp": "2026-11-25T10:00:00Z"}) == []


def test_it_skips_non_object_entries_of_a_list() -> None:
    assert unwrap_list_payload([LOC, None, "x", LOC]) == [LOC, LOC]


def test_it_rejects_an_ocpi_error_envelope() -> None:
    with pytest.raises(Rejected) as exc:
        unwrap_list_payload({"status_code": 2001, "status_message": "Invalid", "timestamp": "2026-11-25T10:00:00Z"})
    assert exc.value.code == "ocpi_error"


def test_it_rejects_invalid_json() -> None:
    with pytest.raises(Rejected):
        unwrap_list_payload(b"{not json")


@pytest.mark.parametrize(
    "payload",
    [LOC, [LOC], {"data": LOC, "status_code": 1000}, {"data": [LOC], "status_code": 1000}, orjson.dumps(LOC).decode()],
)
def test_it_unwraps_every_object_shape(payload: object) -> None:
    assert unwrap_object_payload(payload) == LOC


def test_it_rejects_a_list_of_several_objects_where_one_is_due() -> None:
    with pytest.raises(Rejected):
        unwrap_object_payload([LOC, LOC])
