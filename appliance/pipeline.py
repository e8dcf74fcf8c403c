"""The business rules of the scan path: a fresh scan -> an MQTT event and a feedback outcome.

No I/O library is imported here: publishing is injected, clocks are injected, so the rules
are tested without a broker, a camera or GPIO.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from appliance.codes import Classifier, Code, Kind
from appliance.decode import Rejected, Scan
from appliance.errors import BusError
from appliance.feedback import Signal  # the enum only: feedback imports gpiozero lazily
from appliance.privacy import mask
from appliance.resolve import RESOLVABLE, Resolution, Resolver

log = logging.getLogger(__name__)

SCAN_SCHEMA = "leat-scanner/events/scan/1"
IDENTIFICATION_SCHEMA = "leat-scanner/events/identification/1"
MAX_VALUE_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Handled:
    """The result of handling one scan."""

    outcome: Signal
    code: Code
    event: Mapping[str, Any] | None


class Publish(Protocol):
    """Publishes an event on `events/<name>` (`MqttBus.publish_event`)."""

    def __call__(
        self, name: str, payload: Mapping[str, Any], expiry_s: float | None = None
    ) -> None: ...


class ScanHandler:
    """Classifies a fresh scan, publishes `events/scan`, resolves it through Leat (when a
    resolver is given) and publishes `events/identification`, and picks the feedback."""

    def __init__(
        self,
        device_id: str,
        classifier: Classifier,
        publish: Publish,
        *,
        scan_values: Literal["raw", "masked"] = "raw",
        resolver: Resolver | None = None,
        identification_ttl_s: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self._device_id = device_id
        self._classifier = classifier
        self._publish = publish
        self._scan_values = scan_values
        self._resolver = resolver
        self._ttl_s = identification_ttl_s
        self._wall = wall_clock
        self._monotonic = monotonic_clock
        self._new_id = new_id

    def handle(self, scan: Scan) -> Handled:
        """Publish one scan; unknown codes are still published (masked) but denied."""
        code = self._classifier.classify(scan.text)
        event = self.scan_event(scan, code)
        log.info("scan %s %s (%s)", code.kind.value, mask(code.value), scan.format)
        try:  # a scan a till gets later than an identification would be is stale as well
            self._publish("scan", event, expiry_s=self._ttl_s)
        except BusError as exc:
            log.warning("scan event not accepted by the MQTT client: %s", exc)
            return Handled(Signal.OFFLINE, code, None)
        if code.kind is Kind.UNKNOWN:
            return Handled(Signal.DENIED, code, event)
        if self._resolver is None or code.kind not in RESOLVABLE:
            return Handled(Signal.ACCEPTED, code, event)
        resolution = self._resolver.resolve(code)
        identification = self.identification_event(event, code, resolution)
        try:
            self._publish("identification", identification, expiry_s=self._ttl_s)
        except BusError as exc:
            log.warning("identification not accepted by the MQTT client: %s", exc)
            return Handled(Signal.OFFLINE, code, event)
        if resolution.ok:
            return Handled(Signal.ACCEPTED, code, identification)
        if resolution.status == "offline":
            return Handled(Signal.OFFLINE, code, identification)
        return Handled(Signal.DENIED, code, identification)

    def reject(self, rejected: Rejected) -> Signal:
        """A code was read but refused by the decoder (binary, too long, control characters)."""
        log.info("refused a %s code: %s", rejected.format, rejected.reason)
        return Signal.DENIED

    def scan_event(self, scan: Scan, code: Code) -> dict[str, Any]:
        """The `events/scan` payload (contract: appliance/contract/scan.schema.json)."""
        masked = self._scan_values == "masked" or code.kind is Kind.UNKNOWN
        value = mask(code.value) if masked else code.value
        return {
            "schema": SCAN_SCHEMA,
            "event_id": str(self._new_id()),
            "device_id": self._device_id,
            "timestamp": self.iso(self._wall()),
            "captured_at": self.iso(self.to_wall(scan.timestamp)),
            "kind": code.kind.value,
            "value": value[:MAX_VALUE_LENGTH],
            "masked": masked,
            "format": scan.format,
        }

    def identification_event(
        self, scan_event: Mapping[str, Any], code: Code, resolution: Resolution
    ) -> dict[str, Any]:
        """The `events/identification` payload (contract: identification.schema.json)."""
        now = self._wall()
        return {
            "schema": IDENTIFICATION_SCHEMA,
            "event_id": str(self._new_id()),
            "scan_event_id": scan_event["event_id"],
            "device_id": self._device_id,
            "timestamp": self.iso(now),
            "expires_at": self.iso(now + self._ttl_s),
            "kind": (resolution.kind or code.kind).value,  # Leat's answer when it was asked
            "identifier": (mask(code.value) if self._scan_values == "masked" else code.value)[
                :MAX_VALUE_LENGTH
            ],
            "verified": resolution.verified,
            "status": resolution.status,
            "reason": resolution.reason,
            "contact": resolution.contact,
            "giftcard": resolution.giftcard,
            "voucher": resolution.voucher,
            "token": resolution.token,
        }

    def to_wall(self, monotonic_timestamp: float) -> float:
        """Convert a `time.monotonic()` reading into wall-clock seconds."""
        return self._wall() - (self._monotonic() - monotonic_timestamp)

    @staticmethod
    def iso(seconds: float) -> str:
        """ISO-8601 UTC with milliseconds, as every payload carries it."""
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
