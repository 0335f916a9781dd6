"""The folder inbox: watchdog reports what happens under ``<data_dir>/inbox/``, the settler
decides when a file is complete, and the sensor takes it. The watchdog thread only records
events (no I/O beyond a stat, never HTTP); a full listing at start (the backlog) and every
``rescan_s`` seconds catches whatever the events missed (a full inotify queue, files moved in
with their folder), so a missed event delays a file, never loses it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from flows.sensors.convention import SIDECAR_SUFFIX, is_job, sidecar_of
from flows.sensors.settle import Settler

log = logging.getLogger("styledrop.sensor")


class FolderInbox(FileSystemEventHandler):
    """A ``Source`` for the sensor: ``poll`` returns inbox-relative paths of complete files."""

    def __init__(self, inbox_dir: Path, settle_s: float, rescan_s: float) -> None:
        self.inbox = Path(inbox_dir).resolve()
        self.settler = Settler(settle_s)
        self.rescan_s = rescan_s
        self._next_scan = 0.0
        self._observer: Observer | None = None  # type: ignore[valid-type]

    # --- life -----------------------------------------------------------------------------
    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        observer.schedule(self, str(self.inbox), recursive=True)
        observer.start()
        self._observer = observer
        # Watch first, then list: a file arriving in between is seen at least once.
        self.scan()
        self._next_scan = time.monotonic() + self.rescan_s

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(10)
            self._observer = None

    # --- the Source protocol (worker thread) -----------------------------------------------
    def poll(self, now: float) -> list[str]:
        if now >= self._next_scan:
            self._next_scan = now + self.rescan_s
            self.scan()
        ready = self.settler.due(waits_for=lambda p: (self._sidecar_path(p),))
        return [rel for rel in map(self._rel, ready) if rel is not None and is_job(rel)]

    def scan(self, top: Path | None = None) -> int:
        """Start watching every job file under ``top`` (the whole inbox by default)."""
        n = 0
        for dirpath, dirnames, filenames in os.walk(top or self.inbox):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                path = os.path.join(dirpath, name)
                rel = self._rel(path)
                if rel is not None and is_job(rel) and not self.settler.is_pending(path):
                    self.settler.seen(path)
                    n += 1
        return n

    # --- watchdog callbacks (observer thread): record, never block ---------------------------
    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # noqa: BLE001 - an exception would kill the observer thread
            log.exception("handling %r failed", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, DirCreatedEvent | DirMovedEvent):
            # A folder moved in (or created with files at once) brings files without events.
            dest = os.fsdecode(event.dest_path) if isinstance(event, DirMovedEvent) else src
            if self._rel(dest) is not None:
                self.scan(Path(dest))
            return
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            self.settler.gone(src)
            dest = os.fsdecode(event.dest_path)
            if self._tracked(dest):
                self.settler.seen(dest)  # e.g. photo.jpg.crdownload renamed to photo.jpg
        elif isinstance(event, FileDeletedEvent):
            self.settler.gone(src)
        elif not self._tracked(src):
            return
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
            self.settler.seen(src)
        elif isinstance(event, FileOpenedEvent):
            self.settler.opened(src)
        elif isinstance(event, FileClosedEvent):
            self.settler.closed(src, wrote=True)
        elif isinstance(event, FileClosedNoWriteEvent):
            self.settler.closed(src, wrote=False)

    # --- paths ----------------------------------------------------------------------------
    def _rel(self, path: str) -> str | None:
        """``path`` relative to the inbox with forward slashes; None when outside it."""
        try:
            rel = Path(path).resolve().relative_to(self.inbox)
        except ValueError:
            return None
        return rel.as_posix() if rel.parts else None

    def _tracked(self, path: str) -> bool:
        """Jobs, and sidecars (a job waits for its sidecar to be complete too)."""
        rel = self._rel(path)
        return rel is not None and (is_job(rel) or rel.lower().endswith(SIDECAR_SUFFIX))

    def _sidecar_path(self, path: str) -> str:
        rel = self._rel(path)
        return str(self.inbox / sidecar_of(rel)) if rel else ""
