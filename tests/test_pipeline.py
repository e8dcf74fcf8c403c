"""Scan handling rules: classification, privacy, event payloads and outcomes (no I/O)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from appliance import contract
from appliance.codes import Classifier
from appliance.config import CodesConfig
from appliance.decode import Rejected, Scan
from appliance.errors import BusError
from appliance.feedback import Signal
from appliance.pipeline import ScanHandler
from appliance.samples import DEMO_CODES

CORNERS = ((10, 10), (110, 10), (110, 110), (10, 110))


class RecordingPublisher:
    """Collects what would go on the bus; can be told to fail like a full paho queue."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[str, Mapping[str, Any]]] = []
        self.fail = fail

    def __call__(
        self, name: str, payload: Mapping[str, Any], expiry_s: float | None = None
    ) -> None:
        if self.fail:
            raise BusError("MQTT queue full")
        self.events.append((name, payload))


def handler(publisher: RecordingPublisher, scan_values: str = "raw") -> ScanHandler:
    return ScanHandler(
        "counter-1",
        Classifier(CodesConfig()),
        publisher,
        scan_values=scan_values,  # type: ignore[arg-type]
        wall_clock=lambda: 1_800_000_000.0,
        monotonic_clock=lambda: 500.0,
        new_id=lambda: uuid.UUID("12345678-1234-4234-8234-123456789abc"),
    )


def scan(text: str, timestamp: float = 499.75) -> Scan:
    return Scan(text=text, format="QRCode", position=CORNERS, timestamp=timestamp)


def assert_valid(payload: Mapping[str, Any]) -> None:
    contract.validate("scan", payload)  # formats (uuid, date-time) included
    assert contract.is_date_time(payload["captured_at"])


@pytest.mark.parametrize(
    ("kind", "text"),
    [(k, v) for k, v in DEMO_CODES.items()],
)
def test_pipeline_known_codes_are_published_raw_and_accepted(kind: str, text: str) -> None:
    publisher = RecordingPublisher()
    handled = handler(publisher).handle(scan(text))
    assert handled.outcome is Signal.ACCEPTED
    [(name, event)] = publisher.events
    assert name == "scan"
    assert event["kind"] == kind
    assert event["masked"] is False
    assert event["value"] == handled.code.value
    assert_valid(event)


def test_pipeline_event_carries_times_and_ids() -> None:
    publisher = RecordingPublisher()
    handler(publisher).handle(scan(DEMO_CODES["loyalty_card"], timestamp=499.75))
    [(_, event)] = publisher.events
    assert event["event_id"] == "12345678-1234-4234-8234-123456789abc"
    assert event["device_id"] == "counter-1"
    assert event["timestamp"] == "2027-01-15T08:00:00.000+00:00"
    # captured 0.25 s before "now" on the monotonic clock
    assert event["captured_at"] == "2027-01-15T07:59:59.750+00:00"
    assert event["schema"] == "leat-scanner/events/scan/1"
    assert event["format"] == "QRCode"


def test_pipeline_unknown_code_is_masked_and_denied() -> None:
    publisher = RecordingPublisher()
    handled = handler(publisher).handle(scan("hello world, this is not ours"))
    assert handled.outcome is Signal.DENIED
    [(_, event)] = publisher.events
    assert event["kind"] == "unknown"
    assert event["masked"] is True
    assert "hello world" not in event["value"]
    assert_valid(event)


def test_pipeline_masked_privacy_policy_masks_every_value() -> None:
    publisher = RecordingPublisher()
    handler(publisher, scan_values="masked").handle(scan(DEMO_CODES["loyalty_card"]))
    [(_, event)] = publisher.events
    assert event["masked"] is True
    assert event["value"] != DEMO_CODES["loyalty_card"]
    assert_valid(event)


def test_pipeline_bus_failure_shows_offline() -> None:
    handled = handler(RecordingPublisher(fail=True)).handle(scan(DEMO_CODES["voucher"]))
    assert handled.outcome is Signal.OFFLINE
    assert handled.event is None


def test_pipeline_refused_code_is_denied_without_publishing() -> None:
    publisher = RecordingPublisher()
    outcome = handler(publisher).reject(Rejected("binary payload", "QRCode", 1.0))
    assert outcome is Signal.DENIED
    assert publisher.events == []
