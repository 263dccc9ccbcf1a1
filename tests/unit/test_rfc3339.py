"""RFC 3339 timestamps (rotator.core.rfc3339): its whole grammar read, anything else refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rotator.core.rfc3339 import EXPECTED, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-08T09:30:00Z", datetime(2026, 12, 8, 9, 30, tzinfo=UTC)),
        ("2026-12-08t09:30:00z", datetime(2026, 12, 8, 9, 30, tzinfo=UTC)),
        ("2026-12-08T10:30:00+01:00", datetime(2026, 12, 8, 9, 30, tzinfo=UTC)),
        ("2026-12-08T00:00:00-09:30", datetime(2026, 12, 8, 9, 30, tzinfo=UTC)),
        ("2026-12-08T09:30:00-00:00", datetime(2026, 12, 8, 9, 30, tzinfo=UTC)),  # offset unknown
        ("2026-12-08T23:30:00+14:00", datetime(2026, 12, 8, 9, 30, tzinfo=UTC)),
        ("2026-12-08T09:30:00.5Z", datetime(2026, 12, 8, 9, 30, 0, 500000, tzinfo=UTC)),
        ("2026-12-08T09:30:00.000001Z", datetime(2026, 12, 8, 9, 30, 0, 1, tzinfo=UTC)),
        ("2026-12-08T09:30:00.123456789Z", datetime(2026, 12, 8, 9, 30, 0, 123456, tzinfo=UTC)),
        # A leap second: the instant its minute ends, so times still only move forward.
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),
        ("2016-12-31T23:59:60.5Z", datetime(2017, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)),
        ("2017-01-01T00:59:60+01:00", datetime(2017, 1, 1, tzinfo=UTC)),
        ("2024-02-29T12:00:00Z", datetime(2024, 2, 29, 12, tzinfo=UTC)),
    ],
)
def test_every_form_rfc_3339_allows_is_read_as_utc(text: str, expected: datetime) -> None:
    parsed = parse(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-08T09:30:00",  # no offset: ISO 8601 allows it, RFC 3339 does not
        "2026-12-08",
        "2026-12-08 09:30:00Z",  # a space: not the grammar's T
        "20261208T093000Z",  # ISO 8601 basic format
        "2026-W50-2T09:30:00Z",
        "2026-12-08T09:30Z",
        "2026-12-08T09:30:00.Z",
        "2026-12-08T09:30:00+0100",
        "2026-12-08T09:30:00+01",
        "2026-12-08T09:30:00+24:00",
        "2026-12-08T09:30:00+01:60",
        "2026-13-08T09:30:00Z",
        "2026-02-30T09:30:00Z",
        "2023-02-29T09:30:00Z",
        "2026-12-08T24:00:00Z",
        "2026-12-08T09:60:00Z",
        "2026-12-08T09:30:61Z",
        "\uff12\uff10\uff12\uff16-12-08T09:30:00Z",  # non-ASCII (full-width) digits
        " 2026-12-08T09:30:00Z",
        "2026-12-08T09:30:00Z\n",
        "",
    ],
)
def test_anything_else_is_an_error_saying_what_was_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected an RFC 3339 time") as refused:
        parse(text)
    assert EXPECTED in str(refused.value)
