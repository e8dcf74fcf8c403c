"""`expires_at` is an RFC 3339 date-time in ASCII digits, or the request is refused
`invalid_request` (an outside review found two forms the check took that the runner could
not parse: the POS got `internal`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from test_commands import Device, device  # noqa: F401
from test_money import pay

from appliance import contract


@pytest.mark.parametrize("when", [
    "2099-01-01T10:00:00123Z",  # digits after the seconds without a dot
    "2099-01-01T00:00:00\u0660Z",  # an Arabic-Indic zero
    "\u0662099-01-01T00:00:00Z",
    "2099-01-01T10:00:00.Z",
    "2099-01-01 10:00:00Z",
])
def test_a_malformed_expires_at_is_an_invalid_request(
    device: Device, when: str,  # noqa: F811
) -> None:
    assert contract.date_time(when) is None
    reply = device.intake.handle("giftcard.pay", json.dumps(
        {**pay("exp-1", 100), "expires_at": when}).encode())
    assert reply["error"] is not None and reply["error"]["code"] == "invalid_request", reply


@pytest.mark.parametrize(("text", "expected"), [
    ("2099-01-01T10:00:00Z", datetime(2099, 1, 1, 10, tzinfo=UTC)),
    ("2099-01-01t10:00:00z", datetime(2099, 1, 1, 10, tzinfo=UTC)),
    ("2099-01-01T10:00:00.123456789+00:00", datetime(2099, 1, 1, 10, 0, 0, 123456, UTC)),
    ("2099-01-01T12:00:00.5+02:00", datetime(2099, 1, 1, 10, 0, 0, 500000, UTC)),
])
def test_rfc3339_date_times_are_read_with_their_offset(text: str, expected: datetime) -> None:
    assert contract.date_time(text) == expected
