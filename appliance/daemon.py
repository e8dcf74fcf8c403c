"""Owns the threads of the long-running process (assembly.py wires the parts together).

Threads (docs/architecture.md, "Scan path"):
- camera: read the newest frame -> decode -> debounce -> put fresh scans on a bounded queue
  (a full queue is refused visibly with BUSY feedback, never dropped silently). A camera
  that fails to open or to read is DEGRADED (in `state.camera`, the STATUS line and the
  OFFLINE feedback) and is retried with backoff (1 s doubling to 60 s); nothing else stops;
- worker: classify -> publish -> feedback, one scan at a time;
- forwarder (when Leat is configured): drains the order outbox to Leat (`forwarder.py`);
  POS order requests are answered on their own worker (`pos/intake.py`), which wakes it;
- state: publishes the retained state when it changes (at most once a second) and every
  `state_interval_s`; an error is logged once and reported, never fatal;
- main (`run`): the supervisor. It tells systemd READY=1 once the threads run (never
  waiting for the broker or Leat), WATCHDOG=1 while every thread that should run makes
  progress (heartbeats), a one-line STATUS=, and STOPPING=1 (`sdnotify.py`).
One `threading.Event` stops everything; loops wait with `stop.wait(t)`.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.debounce import Debouncer
from appliance.decode import Decoder, DecodeResult, Scan
from appliance.enrol import Enroller
from appliance.errors import CameraError, OutboxDamaged
from appliance.exposure import ExposureSteer
from appliance.feedback import FeedbackLike, FeedbackState, Signal
from appliance.forwarder import Forwarder
from appliance.outbox import Outbox, outbox_state
from appliance.pipeline import ScanHandler
from appliance.resolve import Resolver
from appliance.sdnotify import Notifier
from appliance.source import ExposureControl, Frame, FrameSource

log = logging.getLogger(__name__)

STATE_SCHEMA = "leat-scanner/state/1"
FLUSH_TIMEOUT_S = 3.0
CAMERA_RETRY_S = (1.0, 60.0)  # a failed camera is retried after 1 s, doubling up to 60 s
STALL_AFTER_S = 20.0  # a thread without progress this long is stalled: no more WATCHDOG=1
STATE_CHECK_S = 1.0  # state changes are published at most this often
SUPERVISE_TICK_S = 1.0
# What changes all the time: not a reason to publish the state before its interval.
VOLATILE_STATE = frozenset({"timestamp", "scans_total", "rejected_total", "last_scan_at"})


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

    def supervise(self) -> bool:
        """Restart the network thread if it has ended; True when it had to."""

    def stop(self, timeout: float = 5.0) -> None:
        """Publish offline and disconnect."""


class PreviewTap(Protocol):
    """The technician page's tap (`appliance.web.preview`): offered frames while `wanted`."""

    wanted: bool

    def offer(self, frame: Frame, result: DecodeResult) -> None:
        """The newest frame and its decode result (a reference: no copy)."""

    def handled(self, scan: Scan, outcome: Signal) -> None:
        """A scan the worker handled, and its outcome."""


@dataclass
class Stats:
    """Counters behind the retained `state` topic; updated from several threads."""

    frames: int = 0
    scans_total: int = 0
    rejected_total: int = 0
    busy_total: int = 0
    last_scan_at: float | None = None  # wall clock
    camera_error: str | None = None
    camera_retry_at: float | None = None  # monotonic, while the camera is degraded
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Heartbeats:
    """When each supervised thread last made progress (monotonic seconds); thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._busy_since: dict[str, Callable[[], float | None]] = {}

    def beat(self, name: str) -> None:
        """`name` made progress now (and is supervised from now on)."""
        with self._lock:
            self._last[name] = self._clock()

    def leave(self, name: str) -> None:
        """`name` is not expected to make progress (ended, or waiting to retry a camera)."""
        with self._lock:
            self._last.pop(name, None)

    def watch(self, name: str, busy_since: Callable[[], float | None]) -> None:
        """Supervise a worker by when it took its current job (None while idle)."""
        with self._lock:
            self._busy_since[name] = busy_since

    def stalled(self, limit_s: float) -> dict[str, float]:
        """The supervised threads without progress for more than `limit_s`: name -> seconds."""
        now = self._clock()
        with self._lock:
            last = dict(self._last)
            for name, busy_since in self._busy_since.items():
                since = busy_since()
                if since is not None:
                    last[name] = since
        return {name: now - at for name, at in last.items() if now - at > limit_s}


class ScanService:
    """The scan path: camera thread, worker thread, the state publisher and the supervisor."""

    def __init__(
        self,
        *,
        device_id: str,
        source: FrameSource | None,
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
        outbox_damaged: str | None = None,
        commands_damaged: str | None = None,
        reopen: Callable[[], FrameSource] | None = None,
        camera_error: str | None = None,
        feedback_state: FeedbackState | None = None,
        notifier: Notifier | None = None,
        heartbeats: Heartbeats | None = None,
        stall_after_s: float = STALL_AFTER_S,
        camera_retry_s: tuple[float, float] = CAMERA_RETRY_S,
        state_check_s: float = STATE_CHECK_S,
        steer: ExposureSteer | None = None,
    ) -> None:
        """`source` None means the camera failed to open (`camera_error` says why): the camera
        thread retries `reopen` with backoff. Without `reopen`, a failing `source` is read
        again after the backoff."""
        self.device_id = device_id
        self._outbox_damaged = outbox_damaged  # then orders are refused and not forwarded
        self._commands_damaged = commands_damaged  # then commands are refused
        self._stop_when_source_ends = stop_when_source_ends
        self.stats = Stats(camera_error=camera_error if source is None else None)
        if source is None and camera_error is None:
            self.stats.camera_error = "camera not opened"
        self._source = source
        self._reopen = reopen
        self._decoder = decoder
        self._steer = steer  # glare advice -> camera EV (appliance/exposure.py)
        self._debouncer = debouncer
        self._handler = handler
        self._bus = bus
        self._feedback = feedback
        self.feedback_state = feedback_state if feedback_state is not None else FeedbackState(None)
        self._resolver = resolver
        self._forwarder = forwarder
        self._scans: queue.Queue[Scan] = queue.Queue(maxsize=queue_size)
        self._state_interval_s = state_interval_s
        self._camera_done = threading.Event()
        self._exit_code = 0
        self._fps_mark = (0, time.monotonic())  # (frames, when) at the last state
        self.notifier = notifier if notifier is not None else Notifier(None)
        self.heartbeats = heartbeats if heartbeats is not None else Heartbeats()
        self._stall_after_s = stall_after_s
        self._retry_min_s, self._retry_max_s = camera_retry_s
        self._state_check_s = state_check_s
        self._last_state: dict[str, Any] | None = None
        self._state_error: str | None = None  # logged once until the state works again
        self._publish_error: str | None = None  # the same for handing it to the bus
        self._outbox_error: str | None = None
        self.preview: PreviewTap | None = None  # the technician page, when it runs
        self.enroller: Enroller | None = None  # enrolment codes, before the handler (enrol.py)

    def run(self, stop: threading.Event) -> int:
        """Run until `stop` is set (or a replay ends); 0 on a clean exit, 1 if a thread crashed."""
        first = self._safe_state(None)  # held by the bus: `state` goes out before `online`
        if first is not None:
            self._publish(first)
        self._bus.start()
        self._feedback.show(Signal.OFFLINE if self.stats.camera_error else Signal.READY)
        threads = [
            threading.Thread(target=self._camera_loop, args=(stop,), name="camera"),
            threading.Thread(target=self._worker_loop, args=(stop,), name="worker"),
        ]
        if self._forwarder is not None and self._outbox_damaged is None:
            threads.append(
                threading.Thread(target=self._forward_loop, args=(stop,), name="forwarder")
            )
        threads.append(threading.Thread(target=self._state_loop, args=(stop,), name="state"))
        for thread in threads:
            thread.start()
        try:
            self.notifier.ready(self.status_line({}))
            self._supervise(stop)
        finally:
            self.notifier.stopping()
            stop.set()
            for thread in threads:
                thread.join(timeout=10.0)
            # Give events queued while the broker was away a last chance to go out.
            self._bus.wait_connected(FLUSH_TIMEOUT_S)
            self._bus.stop()
            self._feedback.close()
            if self._source is not None:
                self._source.close()
            if self._resolver is not None:
                self._resolver.close()
            self.notifier.close()
        return self._exit_code

    @property
    def source_ended(self) -> threading.Event:
        """Set when the frame source has ended (a replay) or the camera thread stopped."""
        return self._camera_done

    # ------------------------------------------------------------------------ supervisor

    def _supervise(self, stop: threading.Event) -> None:
        """Ping systemd's watchdog at half its interval while no thread stalls; keep STATUS."""
        watchdog_s = self.notifier.watchdog_s
        ping_every = watchdog_s / 2 if watchdog_s else math.inf
        next_ping = time.monotonic()
        status = reported = None
        while not stop.wait(min(SUPERVISE_TICK_S, ping_every)):
            stalled = self.heartbeats.stalled(self._stall_after_s)
            line = self.status_line(stalled)
            if line != status:
                self.notifier.status(line)
                status = line
            names = ", ".join(sorted(stalled)) or None
            if names != reported:
                if names is not None:
                    log.error("watchdog: no progress from %s for %.0f s; systemd's watchdog "
                              "is no longer reset", names, max(stalled.values()))
                elif reported is not None:
                    log.warning("watchdog: every thread makes progress again")
                reported = names
            if names is None and time.monotonic() >= next_ping:
                self.notifier.watchdog()
                next_ping = time.monotonic() + ping_every

    def status_line(self, stalled: Mapping[str, float]) -> str:
        """A one-line health summary for systemd's STATUS= (problems first)."""
        problems = [f"STALLED {name} ({age:.0f} s without progress)"
                    for name, age in sorted(stalled.items())]
        with self.stats.lock:
            camera_error, retry_at = self.stats.camera_error, self.stats.camera_retry_at
        if camera_error is not None:
            retry = "" if retry_at is None else (
                f", retry in {max(retry_at - time.monotonic(), 0):.0f} s")
            problems.append(f"DEGRADED camera: {camera_error}{retry}")
        feedback = self.feedback_state.payload()
        if not feedback["ok"]:
            problems.append(f"feedback off: {feedback['error']}")
        state = self._last_state or {}
        parts = []
        if camera_error is None:
            fps = state.get("camera", {}).get("fps")
            parts.append("scanning" if fps is None else f"scanning at {fps:.0f} fps")
        parts.append("MQTT " + ("connected" if self._bus.wait_connected(0) else "disconnected"))
        if "leat" in state:
            reachable = state["leat"].get("reachable")
            parts.append("Leat " + {True: "reachable", False: "unreachable"}.get(
                reachable, "not tried yet"))
        outbox = state.get("outbox")
        if outbox is not None:
            parts.append("outbox " + (f"{outbox['depth']} pending"
                                      if outbox.get("depth") is not None else "unreadable"))
        return "; ".join(problems + parts)

    # ----------------------------------------------------------------------------- threads

    def _forward_loop(self, stop: threading.Event) -> None:
        """Forward the outbox to Leat until stop; a crash is logged and stops the process."""
        assert self._forwarder is not None
        try:
            self._forwarder.run(stop)
        except Exception:  # top of a thread loop: systemd restarts us, orders stay stored
            log.exception("forwarder crashed")
            self._exit_code = 1
            stop.set()
        finally:
            self.heartbeats.leave("forwarder")

    def _camera_loop(self, stop: threading.Event) -> None:
        """Read, decode and debounce frames; hand fresh scans to the worker. A failing
        camera is retried with backoff (DEGRADED) until it works or `stop` is set."""
        delay = self._retry_min_s
        try:
            while not stop.is_set():
                if self._source is None:
                    self._source = self._open_camera()
                    if self._steer is not None:
                        self._steer.reset()  # a reopened camera starts at camera.ev
                if self._source is not None:
                    self.heartbeats.beat("camera")
                    try:
                        frame = self._source.read()
                        if frame is None:
                            log.info("frame source ended")
                            return
                        self._camera_works()
                        result = self._decoder.decode(frame)
                        self._steer_exposure(frame.timestamp, result)
                        if self.preview is not None and self.preview.wanted:
                            self.preview.offer(frame, result)
                        self._on_frame(frame.timestamp, result)
                        delay = self._retry_min_s
                        continue
                    except Exception as exc:  # CameraError, or any driver/decoder failure
                        self._camera_failed(exc)
                # DEGRADED: not supervised while it waits to retry
                self.heartbeats.leave("camera")
                with self.stats.lock:
                    self.stats.camera_retry_at = time.monotonic() + delay
                if stop.wait(delay):
                    return
                delay = min(delay * 2, self._retry_max_s)
        finally:
            self.heartbeats.leave("camera")
            self._camera_done.set()

    def _steer_exposure(self, timestamp: float, result: DecodeResult) -> None:
        """Hand the frame's glare advice to the steer and its EV requests to the camera."""
        if self._steer is None:
            return
        ev = self._steer.observe(result.advice, timestamp, bool(result.scans or result.rejected))
        source = self._source
        if ev is not None and isinstance(source, ExposureControl):  # rare: the check is slow
            try:
                source.set_ev(ev)
            except Exception:  # a refused exposure request never stops the scanning
                log.warning("camera exposure request failed", exc_info=True)

    def _open_camera(self) -> FrameSource | None:
        """The reopened camera, or None (the failure recorded) when it still fails."""
        if self._reopen is None:
            return None
        try:
            source = self._reopen()
        except Exception as exc:  # CameraError, or anything the driver raises
            self._camera_failed(exc)
            return None
        log.info("camera opened")
        return source

    def _camera_failed(self, exc: BaseException) -> None:
        """Record a camera failure: log, state, OFFLINE feedback (once per outage)."""
        error = str(exc) or type(exc).__name__
        if not isinstance(exc, CameraError):
            log.error("camera thread failed", exc_info=exc)
            error = f"{type(exc).__name__}: {error}"
        with self.stats.lock:
            first = self.stats.camera_error is None
            same = self.stats.camera_error == error
            self.stats.camera_error = error
        if not same:
            log.error("camera failed (retrying with backoff up to %g s): %s",
                      self._retry_max_s, error)
        if first:
            self._feedback.show(Signal.OFFLINE)
        if self._reopen is not None and self._source is not None:
            source, self._source = self._source, None
            try:
                source.close()
            except Exception:  # closing a broken camera may fail too
                log.debug("closing the failed camera failed", exc_info=True)

    def _camera_works(self) -> None:
        """A frame arrived: end a DEGRADED state."""
        with self.stats.lock:
            if self.stats.camera_error is None:
                return
            self.stats.camera_error = None
            self.stats.camera_retry_at = None
        log.warning("camera works again")
        self._feedback.show(Signal.READY)

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
        try:
            while True:
                self.heartbeats.beat("worker")
                try:
                    scan = self._scans.get(timeout=0.2)
                except queue.Empty:
                    if stop.is_set():
                        return
                    if self._camera_done.is_set() and self._stop_when_source_ends:
                        stop.set()  # a finished replay ends the run once its scans are out
                        return
                    continue
                if self.enroller is not None and (
                    enrolled := self.enroller.intercept(scan.text)
                ):  # an enrolment code: never a scan event, never shown on the page
                    self._feedback.show(enrolled)
                    continue
                try:
                    handled = self._handler.handle(scan)
                    with self.stats.lock:
                        self.stats.scans_total += 1
                        self.stats.last_scan_at = time.time()
                    self._feedback.show(handled.outcome)
                    if self.preview is not None:
                        self.preview.handled(scan, handled.outcome)
                except Exception:  # top of a thread loop
                    log.exception("handling a scan failed")
                    self._feedback.show(Signal.DENIED)
        finally:
            self.heartbeats.leave("worker")

    def _state_loop(self, stop: threading.Event) -> None:
        """Publish the state on change (checked every `STATE_CHECK_S`) and on the interval;
        a last one after stop. Never dies: errors are logged once and reported."""
        outbox: Outbox | None = None
        sent_key: Any = None
        sent_at = -math.inf
        try:
            while True:
                self.heartbeats.beat("state")
                stopping = stop.is_set()
                if not stopping:
                    self._bus.supervise()
                if self._forwarder is not None and outbox is None:
                    outbox = self._open_outbox()
                state = self._safe_state(outbox)
                if outbox is not None and (state or {}).get("outbox", {}).get("error"):
                    outbox.close()  # reopened on the next round
                    outbox = None
                if state is not None:
                    key = _significant(state)
                    now = time.monotonic()
                    due = stopping or key != sent_key or now - sent_at >= self._state_interval_s
                    if due and self._publish(state):
                        sent_key, sent_at = key, now
                if stopping:
                    return
                stop.wait(self._state_check_s)
        finally:
            self.heartbeats.leave("state")
            if outbox is not None:
                outbox.close()

    def _open_outbox(self) -> Outbox | None:
        """The state thread's own outbox connection, or None (reported) when it fails."""
        assert self._forwarder is not None
        try:
            return Outbox(self._forwarder.outbox_path)
        except Exception as exc:
            self._note_outbox_error(exc)
            return None

    def _note_outbox_error(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if self._outbox_error != error:
            log.error("state: cannot read the outbox: %s", error)
        self._outbox_error = error

    def _safe_state(self, outbox: Outbox | None) -> dict[str, Any] | None:
        """`state()`, or None when it fails (logged once until it works again)."""
        try:
            state = self.state(outbox)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self._state_error != error:
                log.exception("state: cannot compute the state")
            self._state_error = error
            return None
        self._state_error = None
        self._last_state = state
        return state

    def _publish(self, state: Mapping[str, Any]) -> bool:
        """Hand the state to the bus; False (logged once) when that fails."""
        try:
            self._bus.set_state(state)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self._publish_error != error:
                log.error("state: cannot publish: %s", error)
            self._publish_error = error
            return False
        if self._publish_error is not None:
            log.warning("state: published again")
            self._publish_error = None
        return True

    @property
    def last_state(self) -> Mapping[str, Any] | None:
        """The `state` payload last computed by the state thread (None before the first)."""
        return self._last_state

    def play(self, signal: Signal) -> None:
        """Show `signal` on the LEDs and buzzer (the technician page's test scan)."""
        self._feedback.show(signal)

    def state(self, outbox: Outbox | None = None) -> dict[str, Any]:
        """The retained `state` payload (contract: state.schema.json); fps since the last one.

        `outbox` is the caller's own connection; without one, a short-lived one is opened.
        An outbox that cannot be read shows as `outbox.error`, never as an exception.
        """
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
        state["feedback"] = self.feedback_state.payload()
        if self._forwarder is not None or self._resolver is not None:
            state["leat"] = {"reachable": self._leat_reachable()}
            if self._forwarder is not None and self._forwarder.alert is not None:
                state["leat"]["alert"] = self._forwarder.alert  # orders held (forwarder.py)
        if self._forwarder is not None:
            state["outbox"] = self._outbox_state(outbox)
        if self._commands_damaged is not None:
            state["commands"] = {"damaged": self._commands_damaged}
        return state

    def _outbox_state(self, outbox: Outbox | None) -> dict[str, Any]:
        """`state.outbox`: depth and oldest age, or nulls and why (damaged, or the error)."""
        assert self._forwarder is not None
        try:
            if outbox is None:  # one-off read: damage is reported, not raised
                found = outbox_state(self._forwarder.outbox_path)
            else:
                age = outbox.oldest_pending_age()
                found = {"depth": outbox.depth(),
                         "oldest_pending_age_s": None if age is None else round(age, 1)}
        except OutboxDamaged as exc:  # orders are refused until `leat-scanner outbox repair`
            return {"depth": None, "oldest_pending_age_s": None, "damaged": exc.reason}
        except Exception as exc:  # a locked or unreadable store must not end the state thread
            self._note_outbox_error(exc)
            return {"depth": None, "oldest_pending_age_s": None, "error": self._outbox_error}
        if self._outbox_error is not None:
            log.warning("state: the outbox is readable again")
            self._outbox_error = None
        return found

    def _leat_reachable(self) -> bool | None:
        """What the forwarder last saw, else what the resolver last saw."""
        seen = self._forwarder.reachable if self._forwarder is not None else None
        if seen is None and self._resolver is not None:
            seen = self._resolver.reachable
        return seen


def _significant(state: Mapping[str, Any]) -> Any:
    """What of `state` is worth publishing early when it changes: health, not counters."""
    key = {name: value for name, value in state.items() if name not in VOLATILE_STATE}
    key["camera"] = {k: v for k, v in state["camera"].items() if k != "fps"}
    if "outbox" in key:
        key["outbox"] = {k: v for k, v in state["outbox"].items() if k != "oldest_pending_age_s"}
    return repr(sorted(key.items()))
