"""Wires the real parts together and owns the threads of the long-running process.

Threads (DESIGN.md "Concurrency"):
- camera: read the newest frame -> decode -> debounce -> put fresh scans on a bounded queue
  (a full queue is refused visibly with BUSY feedback, never dropped silently);
- worker: classify -> publish -> feedback, one scan at a time;
- forwarder (when Leat is configured): drains the order outbox to Leat (`forwarder.py`);
  POS order requests are answered on their own worker (`orders.py`), which wakes it;
- main (`run`): publishes the retained state every `state_interval_s` and waits for stop.
One `threading.Event` stops everything; loops wait with `stop.wait(t)`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance import CONTRACT_VERSION, __version__
from appliance.bus import MqttBus
from appliance.camera import FrameSource, open_source
from appliance.codes import Classifier
from appliance.config import Config, read_secret
from appliance.debounce import Debouncer
from appliance.decode import Decoder, Scan
from appliance.errors import CameraError
from appliance.feedback import Feedback, FeedbackLike, NullFeedback, Signal
from appliance.forwarder import Forwarder, TokenSettings
from appliance.orders import OrderRequests
from appliance.outbox import Outbox
from appliance.pipeline import ScanHandler
from appliance.resolve import Resolver

log = logging.getLogger(__name__)

INFO_SCHEMA = "leat-scanner/info/1"
STATE_SCHEMA = "leat-scanner/state/1"
CAPABILITIES = ("scan",)
LEAT_CAPABILITIES = ("identify", "orders")
FLUSH_TIMEOUT_S = 3.0


class BusLike(Protocol):
    """What the daemon needs from the MQTT bus (`appliance.bus.MqttBus`)."""

    def start(self) -> None:
        """Connect in the background."""

    def publish_event(
        self, name: str, payload: Mapping[str, Any], expiry_s: float | None = None
    ) -> None:
        """Publish an event (QoS 1, not retained)."""

    def set_state(self, payload: Mapping[str, Any]) -> None:
        """Publish the retained state."""

    def wait_connected(self, timeout: float) -> bool:
        """Wait for the broker; True when connected."""

    def stop(self, timeout: float = 5.0) -> None:
        """Publish offline and disconnect."""


@dataclass
class Stats:
    """Counters behind the retained `state` topic; updated from several threads."""

    frames: int = 0
    scans_total: int = 0
    rejected_total: int = 0
    busy_total: int = 0
    last_scan_at: float | None = None  # wall clock
    camera_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class ScanService:
    """The scan path: camera thread, worker thread and the state publisher."""

    def __init__(
        self,
        *,
        device_id: str,
        source: FrameSource,
        decoder: Decoder,
        debouncer: Debouncer,
        handler: ScanHandler,
        bus: BusLike,
        feedback: FeedbackLike,
        queue_size: int = 8,
        state_interval_s: float = 15.0,
        resolver: Resolver | None = None,
        forwarder: Forwarder | None = None,
        stop_when_source_ends: bool = True,
    ) -> None:
        self.device_id = device_id
        self._stop_when_source_ends = stop_when_source_ends
        self.stats = Stats()
        self._source = source
        self._decoder = decoder
        self._debouncer = debouncer
        self._handler = handler
        self._bus = bus
        self._feedback = feedback
        self._resolver = resolver
        self._forwarder = forwarder
        self._scans: queue.Queue[Scan] = queue.Queue(maxsize=queue_size)
        self._state_interval_s = state_interval_s
        self._camera_done = threading.Event()
        self._exit_code = 0
        self._fps_mark = (0, time.monotonic())  # (frames, when) at the last state

    def run(self, stop: threading.Event) -> int:
        """Run until `stop` is set (or a replay ends); 0 on a clean exit, 1 on camera failure."""
        self._bus.start()
        self._feedback.show(Signal.READY)
        threads = [
            threading.Thread(target=self._camera_loop, args=(stop,), name="camera"),
            threading.Thread(target=self._worker_loop, args=(stop,), name="worker"),
        ]
        if self._forwarder is not None:
            threads.append(
                threading.Thread(target=self._forward_loop, args=(stop,), name="forwarder")
            )
        for thread in threads:
            thread.start()
        try:
            self._publish_state()
            while not stop.wait(self._state_interval_s):
                self._publish_state()
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10.0)
            self._publish_state()
            # Give events queued while the broker was away a last chance to go out.
            self._bus.wait_connected(FLUSH_TIMEOUT_S)
            self._bus.stop()
            self._feedback.close()
            self._source.close()
            if self._resolver is not None:
                self._resolver.close()
        return self._exit_code

    @property
    def source_ended(self) -> threading.Event:
        """Set when the frame source has ended (a replay) or failed."""
        return self._camera_done

    def _forward_loop(self, stop: threading.Event) -> None:
        """Forward the outbox to Leat until stop; a crash is logged and stops the process."""
        assert self._forwarder is not None
        try:
            self._forwarder.run(stop)
        except Exception:  # top of a thread loop: systemd restarts us, orders stay stored
            log.exception("forwarder crashed")
            self._exit_code = 1
            stop.set()

    def _camera_loop(self, stop: threading.Event) -> None:
        """Read, decode and debounce frames; hand fresh scans to the worker."""
        try:
            while not stop.is_set():
                frame = self._source.read()
                if frame is None:
                    log.info("frame source ended")
                    break
                self._on_frame(frame.timestamp, self._decoder.decode(frame))
        except CameraError as exc:
            log.error("camera failed: %s", exc)
            with self.stats.lock:
                self.stats.camera_error = str(exc)
            self._feedback.show(Signal.OFFLINE)
            self._exit_code = 1
            stop.set()
        except Exception:  # top of a thread loop: never die silently
            log.exception("camera thread crashed")
            self._exit_code = 1
            stop.set()
        finally:
            self._camera_done.set()

    def _on_frame(self, timestamp: float, result: Any) -> None:
        with self.stats.lock:
            self.stats.frames += 1
        # Refused codes are debounced too, or a bad code held up would buzz at frame rate.
        refused = {f"\0{r.format}:{r.reason}": r for r in result.rejected}
        wanted = {scan.text: scan for scan in result.scans}
        for key in self._debouncer.observe([*wanted, *refused], timestamp):
            if key in refused:
                with self.stats.lock:
                    self.stats.rejected_total += 1
                self._feedback.show(self._handler.reject(refused[key]))
                continue
            try:
                self._scans.put_nowait(wanted[key])
            except queue.Full:
                with self.stats.lock:
                    self.stats.busy_total += 1
                log.warning("scan refused: %d scans already waiting", self._scans.maxsize)
                self._feedback.show(Signal.BUSY)

    def _worker_loop(self, stop: threading.Event) -> None:
        """Handle queued scans; after stop, drain what is queued, then exit."""
        while True:
            try:
                scan = self._scans.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set():
                    return
                if self._camera_done.is_set() and self._stop_when_source_ends:
                    stop.set()  # a finished replay ends the run once its scans are out
                    return
                continue
            try:
                handled = self._handler.handle(scan)
                with self.stats.lock:
                    self.stats.scans_total += 1
                    self.stats.last_scan_at = time.time()
                self._feedback.show(handled.outcome)
            except Exception:  # top of a thread loop
                log.exception("handling a scan failed")
                self._feedback.show(Signal.DENIED)

    def state(self) -> dict[str, Any]:
        """The retained `state` payload (contract: state.schema.json); fps since the last one."""
        now = time.monotonic()
        with self.stats.lock:
            stats = self.stats
            frames_before, since = self._fps_mark
            fps = (stats.frames - frames_before) / max(now - since, 1e-3)
            self._fps_mark = (stats.frames, now)
            state: dict[str, Any] = {
                "schema": STATE_SCHEMA,
                "device_id": self.device_id,
                "timestamp": ScanHandler.iso(time.time()),
                "camera": {
                    "ok": stats.camera_error is None,
                    "fps": round(fps, 2),
                    "error": stats.camera_error,
                },
                "scans_total": stats.scans_total,
                "rejected_total": stats.rejected_total + stats.busy_total,
                "last_scan_at": (
                    None if stats.last_scan_at is None else ScanHandler.iso(stats.last_scan_at)
                ),
            }
        if self._forwarder is not None or self._resolver is not None:
            state["leat"] = {"reachable": self._leat_reachable()}
        if self._forwarder is not None:
            with Outbox(self._forwarder.outbox_path) as outbox:
                age = outbox.oldest_pending_age()
                state["outbox"] = {
                    "depth": outbox.depth(),
                    "oldest_pending_age_s": None if age is None else round(age, 1),
                }
        return state

    def _leat_reachable(self) -> bool | None:
        """What the forwarder last saw, else what the resolver last saw."""
        seen = self._forwarder.reachable if self._forwarder is not None else None
        if seen is None and self._resolver is not None:
            seen = self._resolver.reachable
        return seen

    def _publish_state(self) -> None:
        self._bus.set_state(self.state())


def leat_configured(config: Config) -> bool:
    """True when Leat credentials are configured (a token, or an OAuth client)."""
    leat = config.leat
    return leat.client_id is not None or read_secret("leat-token", leat.token_file) is not None


def info_payload(config: Config) -> dict[str, Any]:
    """The retained `info` payload (contract: info.schema.json)."""
    return {
        "schema": INFO_SCHEMA,
        "device_id": config.device.id,
        "version": __version__,
        "contract_version": CONTRACT_VERSION,
        "capabilities": [*CAPABILITIES, *(LEAT_CAPABILITIES if leat_configured(config) else ())],
        "started_at": ScanHandler.iso(time.time()),
        "decode_formats": list(config.decode.formats),
    }


def build(
    config: Config,
    *,
    source: FrameSource | None = None,
    feedback: FeedbackLike | None = None,
    pin_factory: Any = None,
    stop_when_source_ends: bool = True,
) -> ScanService:
    """Build the scan service from config; `source`/`feedback` may be injected (demo, tests)."""
    decoder = Decoder(config.decode)
    classifier = Classifier(config.codes)
    password = read_secret("mqtt-password", config.mqtt.password_file)
    bus = MqttBus(
        config.mqtt,
        config.base_topic,
        f"leat-scanner-{config.device.id}",
        password,
        info_payload(config),
    )
    if feedback is None:
        feedback = (
            Feedback.from_config(config.feedback, pin_factory=pin_factory)
            if config.feedback.enabled
            else NullFeedback()
        )
    if source is None:
        try:
            source = open_source(config.camera)
        except CameraError:
            feedback.close()
            raise
    resolver = forwarder = None
    if leat_configured(config):
        resolver, forwarder = _leat_parts(config, bus)
    else:  # every POS request is answered `not_configured`
        bus.serve("request/+", OrderRequests(
            None, bus.publish_response, base_topic=config.base_topic, shop_uuid=None
        ))
    handler = ScanHandler(
        config.device.id,
        classifier,
        bus.publish_event,
        scan_values=config.privacy.scan_values,
        resolver=resolver,
        identification_ttl_s=config.leat.identification_ttl_s,
    )
    return ScanService(
        device_id=config.device.id,
        source=source,
        decoder=decoder,
        debouncer=Debouncer(config.debounce),
        handler=handler,
        bus=bus,
        feedback=feedback,
        resolver=resolver,
        forwarder=forwarder,
        stop_when_source_ends=stop_when_source_ends,
    )


def _leat_parts(config: Config, bus: MqttBus) -> tuple[Resolver, Forwarder]:
    """Everything that talks to Leat, over one client: scan resolution, and orders
    (requests answered from the bus, stored in the outbox, forwarded by the forwarder)."""
    from appliance.leat.client import LeatClient  # httpx only when Leat is configured

    leat = config.leat
    client = LeatClient.from_config(leat)
    account_secret = read_secret("leat-account-secret", leat.account_secret_file)
    resolver = Resolver(
        client,
        shop_uuid=leat.shop_uuid,
        deadline_s=leat.resolve_deadline_s,
        account_secret=account_secret,
    )
    token = None
    if leat.portal_url is not None and account_secret is not None:
        token = TokenSettings(leat.portal_url, account_secret, leat.shop_uuid)
    wake = threading.Event()
    forwarder = Forwarder(
        config.outbox_path,
        client,
        bus.publish_event,
        device_id=config.device.id,
        shop_uuid=leat.shop_uuid,
        token=token,
        wake=wake,
    )
    requests = OrderRequests(
        config.outbox_path,
        bus.publish_response,
        base_topic=config.base_topic,
        shop_uuid=leat.shop_uuid,
        wake=wake,
        claim_url=forwarder.claim_url if token is not None else None,
    )
    bus.serve("request/+", requests)
    return resolver, forwarder
