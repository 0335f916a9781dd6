"""When is a file in a local folder complete? The writer tells us by closing it (inotify's
IN_CLOSE_WRITE, watchdog's ``on_closed``); where that signal is missing (other platforms, a
file copied in while we were down, a lost event) its size and mtime holding still for
``settle_s`` seconds have to do.

A file we saw opened and not yet closed is not taken by the timer alone, however long the
writer pauses: only its close, or ``stuck_factor * settle_s`` without change (a close event we
never got must not strand a file forever). An empty file waits ``empty_factor * settle_s``
after its close (a placeholder that a writer creates first fills it at once; an empty photo is
refused, in seconds) and that long without one.

Opens can go unseen: a file created in a folder the moment the folder appears is written
before inotify watches that folder. So before the timer alone declares a file complete, on
Linux we also ask /proc whether some process still has it open for writing; if so it is
treated as seen open (its close will come, the folder being watched by then).

Fed by the watchdog thread, read by the sensor's worker thread: one lock around the table.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class _Entry:
    size: int = -1
    mtime_ns: int = -1
    since: float = 0.0  # when size/mtime last changed (clock time)
    opens: int = 0  # opens seen minus closes seen, never below 0
    closed: bool = False  # closed after writing, and unchanged since


class Settler:
    def __init__(
        self,
        settle_s: float,
        *,
        stuck_factor: float = 30.0,
        empty_factor: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle_s = settle_s
        self.stuck_s = settle_s * stuck_factor
        self.empty_s = settle_s * empty_factor
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, _Entry] = {}

    # --- events (any thread) ----------------------------------------------------------------
    def seen(self, path: str) -> None:
        """Created, modified, moved in, or found by a scan: watch it until it is complete."""
        with self._lock:
            self._entry(path)

    def opened(self, path: str) -> None:
        with self._lock:
            self._entry(path).opens += 1

    def closed(self, path: str, wrote: bool) -> None:
        with self._lock:
            entry = self._entry(path)
            entry.opens = max(0, entry.opens - 1)
            if wrote:
                entry.closed = True
                # Remember the size at close: a change after it means it is being written again.
                stat = _stat(path)
                if stat is not None:
                    entry.size, entry.mtime_ns = stat

    def gone(self, path: str) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def is_pending(self, path: str) -> bool:
        with self._lock:
            return path in self._pending

    def _entry(self, path: str) -> _Entry:
        entry = self._pending.get(path)
        if entry is None:
            entry = self._pending[path] = _Entry(since=self.clock())
        return entry

    # --- readiness (the worker thread) ------------------------------------------------------
    def due(self, waits_for: Callable[[str], Iterable[str]] = lambda p: ()) -> list[str]:
        """Paths that are complete now, removed from the table. A path is held back while any
        of ``waits_for(path)`` (its sidecar) is itself still being written."""
        now = self.clock()
        with self._lock:
            ready: list[str] = []
            for path, entry in list(self._pending.items()):
                stat = _stat(path)
                if stat is None:
                    del self._pending[path]  # deleted or moved away before it settled
                    continue
                if stat != (entry.size, entry.mtime_ns):
                    if entry.size >= 0:
                        entry.closed = False  # written again after a close
                    entry.size, entry.mtime_ns = stat
                    entry.since = now
                if self._complete(entry, now):
                    ready.append(path)
            by_timer = [p for p in ready if not self._pending[p].closed]
            for path in open_for_writing(by_timer):
                self._pending[path].opens = max(1, self._pending[path].opens)
                ready.remove(path)
            ready_set = set(ready)
            out = [
                p
                for p in ready
                if not any(w in self._pending and w not in ready_set for w in waits_for(p))
            ]
            for p in out:
                del self._pending[p]
            return out

    def _complete(self, entry: _Entry, now: float) -> bool:
        quiet = now - entry.since
        if entry.opens > 0:
            return quiet >= self.stuck_s
        if entry.size == 0:
            # Closed empty: a placeholder is refilled at once, so a few settle times will do
            # (then it is refused as not an image, in seconds); never seen closed: as long as
            # a file whose close we may have missed.
            return quiet >= (self.empty_s if entry.closed else self.stuck_s)
        return entry.closed or quiet >= self.settle_s


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def open_for_writing(paths: Iterable[str]) -> set[str]:
    """Those of ``paths`` that a process has open for writing, as far as /proc tells (Linux;
    other users' processes may be hidden from us). Elsewhere: nothing is known, empty set.
    One pass over /proc for all paths (tens of milliseconds), and only for files the timer
    is about to take, so it runs rarely."""
    wanted = {os.path.realpath(p): p for p in paths}
    if not wanted or not os.path.isdir("/proc/self/fdinfo"):
        return set()
    found: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in wanted and _writable(pid, fd):
                found.add(wanted[target])
    return found


def _writable(pid: str, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("flags:"):
                    return bool(int(line.split()[1], 8) & (os.O_WRONLY | os.O_RDWR))
    except (OSError, ValueError, IndexError):
        pass
    return False
