"""A worker thread and its bounded queue: one lane of POS requests.

Orders and returns are answered from SQLite alone; a command may wait for Leat up to its
deadline (seconds). Each kind has its own lane, so an order never waits behind a queue of
slow Leat reads (an outside test had an order.create answered after 35 s behind seven
lookups), and commands still run one at a time, as `runner.Commands` expects.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Job = TypeVar("Job")


class Lane(Generic[Job]):
    """Jobs taken in order by one thread; `offer` never blocks (False: the queue is full)."""

    def __init__(self, name: str, backlog: int, work: Callable[[Job], None],
                 on_exit: Callable[[], None]) -> None:
        self.name = name
        self._work = work
        self._on_exit = on_exit
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=backlog)
        self._thread: threading.Thread | None = None
        self.busy_since: float | None = None  # time.monotonic() when the current job began

    @property
    def waiting(self) -> int:
        """Jobs queued, not yet taken."""
        return self._jobs.qsize()

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def offer(self, job: Job) -> bool:
        """Queue `job`; False when `backlog` jobs already wait."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    def stop(self, timeout: float) -> None:
        """Do the jobs already queued (here, when the thread never started), then end it."""
        if self._thread is None:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    return
                if job is not None:
                    self._do(job)
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            log.warning("%s: the worker did not take its stop within %.1f s", self.name, timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                self._do(job)
        finally:
            self._on_exit()

    def _do(self, job: Job) -> None:
        self.busy_since = time.monotonic()
        try:
            self._work(job)
        except Exception:  # top of a thread loop: do the next job
            log.exception("%s: a job failed", self.name)
        finally:
            self.busy_since = None
