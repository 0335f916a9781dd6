"""The sensor's loop, the same for the folder and the S3 inbox: one worker thread takes what
arrived, submits what is due (backing off, all files together, while Prefect is unreachable)
and reads the tracked runs' states every ``poll_s``; each file's steps are ``Lifecycle``'s
(lifecycle.py).

One worker thread does all the I/O (moves, hashing, HTTP to Prefect and S3); other threads
(the watchdog observer, the webhook) only note what they saw in their source, which the worker
polls, or call ``offer``; neither ever blocks on I/O.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from flows.sensors.lifecycle import Lifecycle, SensorConfig, guard
from flows.sensors.store import InboxStore
from flows.sensors.submit import PrefectGateway, SubmitError
from flows.sensors.take import Take

log = logging.getLogger("styledrop.sensor")


class Source(Protocol):
    """Something that finds files to take besides ``offer`` (settled local files, an S3
    listing). Polled by the worker thread every tick, so it may do I/O."""

    def poll(self, now: float) -> Iterable[str]: ...


class InboxSensor:
    def __init__(
        self,
        store: InboxStore,
        gateway: PrefectGateway,
        config: SensorConfig,
        sources: Iterable[Source] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = Lifecycle(store, gateway, config)
        self.config = config
        self.sources = list(sources)
        self.clock = clock
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._next_poll = 0.0
        # While Prefect is unreachable every submission waits (one backoff for all: each
        # failed attempt costs seconds of this thread, so one probe per round, not one per file).
        self._submit_after = 0.0
        self._submit_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- threads --------------------------------------------------------------------------
    def offer(self, inbox_rel: str) -> None:
        """A file under inbox/ may be ready. Safe from any thread; never blocks."""
        self._queue.put(inbox_rel)

    def start(self) -> None:
        # Run in a copy of the caller's context, so Prefect settings entered there (e.g.
        # `temporary_settings` with the API URL) hold in the worker thread too.
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(
            target=ctx.run, args=(self._run,), name="styledrop-sensor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the step in progress and return. Files in flight stay in processing/ with
        their bookkeeping; the next start picks them up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.files.recover()
        except Exception:  # noqa: BLE001 - a broken recovery must not stop new files
            log.exception("recovering processing/ failed; continuing with new files")
        self._next_poll = 0.0  # what was recovered is judged at once
        while not self._stop.is_set():
            try:
                self.step(wait=self.config.tick_s)
            except Exception:  # noqa: BLE001 - the sensor must outlive any one bad file
                log.exception("sensor step failed; continuing")
                self._stop.wait(1.0)

    # --- one round ------------------------------------------------------------------------
    def step(self, wait: float = 0.0) -> None:
        """One round: take what arrived, submit what is due, read run states when due."""
        offered: list[str] = []
        try:
            offered.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
            while True:
                offered.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        now = self.clock()
        for source in self.sources:
            try:
                offered.extend(source.poll(now))
            except Exception:  # noqa: BLE001 - e.g. S3 unreachable: list again next time
                log.warning("finding new files failed; will look again", exc_info=True)
        for rel in dict.fromkeys(offered):  # one take per name per round
            guard(rel, lambda rel=rel: self.files.take(rel))
        for take in self.files.in_flight:
            if self.clock() < self._submit_after:
                break
            if take.flow_run_id is None and take.parameters is not None:
                guard(take.inbox_rel, lambda take=take: self._submit(take))
        if self.files.in_flight and self.clock() >= self._next_poll:
            self._next_poll = self.clock() + self.config.poll_s
            for take in self.files.in_flight:
                if take.parameters is None:  # preparing it failed (storage hiccup): again
                    guard(take.inbox_rel, lambda take=take: self.files.prepare(take))
            self.files.poll()

    def _submit(self, take: Take) -> None:
        try:
            if self.files.submit(take):
                self._submit_failures = 0
        except SubmitError as exc:  # Prefect unreachable or not ready: back off, keep the file
            self._submit_failures += 1
            delay = min(self.config.retry_max_s, 2.0 ** (self._submit_failures - 1))
            self._submit_after = self.clock() + delay
            log.warning("submitting %s failed (%s); retry in %.0f s", take.inbox_rel, exc, delay)
