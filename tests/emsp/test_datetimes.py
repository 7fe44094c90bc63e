"""The one reader and writer of RFC 3339 date-times (OCPI DateTime, Beckn timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from emsp.datetimes import NOT_RFC3339, OFFSET, DateTimeError, format_datetime, parse_datetime, parse_text

MOMENT = datetime(2026, 11, 25, 10, 0, 5, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("precision", "text"),
    [
        ("auto", "2026-11-25T10:00:05.123Z"),
        ("seconds", "2026-11-25T10:00:05Z"),
        ("millis", "2026-11-25T10:00:05.123Z"),
        ("micros", "2026-11-25T10:00:05.123456Z"),
    ],
)
def test_it_writes_utc_with_a_z_at_each_precision(precision: str, text: str) -> None:
    assert format_datetime(MOMENT, precision) == text  # type: ignore[arg-type]


def test_auto_and_micros_leave_out_a_zero_fraction_and_millis_keeps_it() -> None:
    whole = MOMENT.replace(microsecond=0)
    assert format_datetime(whole) == format_datetime(whole, "micros") == "2026-11-25T10:00:05Z"
    assert format_datetime(whole, "millis") == "2026-11-25T10:00:05.000Z"


def test_other_zones_are_written_in_utc() -> None:
    ist = MOMENT.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert format_datetime(ist, "seconds") == "2026-11-25T10:00:05Z"


@pytest.mark.parametrize(
    ("text", "deviation"),
    [
        ("2026-11-25T10:00:05Z", None),
        ("2026-11-25T10:00:05", None),  # no designator means UTC (OCPI types §16.2)
        ("2026-11-25 10:00:05Z", None),
        ("2026-11-25t10:00:05z", None),
        ("2026-11-25T15:30:05+05:30", OFFSET),
        ("2026-11-25T10:00:05+00:00", OFFSET),
        ("2026-11-25", NOT_RFC3339),
    ],
)
def test_it_reads_leniently_and_says_how_a_value_deviated(text: str, deviation: str | None) -> None:
    moment, found = parse_text(text)
    assert moment.tzinfo is UTC
    assert moment.replace(hour=10, minute=0, second=5) == datetime(2026, 11, 25, 10, 0, 5, tzinfo=UTC)
    assert found == deviation


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "20261125", "", "0001-01-01T00:00:00+01:00"])
def test_garbage_is_an_error(value: str) -> None:
    with pytest.raises(DateTimeError):
        parse_text(value)


def test_epoch_numbers_only_when_asked() -> None:
    assert parse_datetime(1_795_600_800, epoch=True) == (datetime.fromtimestamp(1_795_600_800, UTC), NOT_RFC3339)
    with pytest.raises(DateTimeError):
        parse_datetime(1_795_600_800)
