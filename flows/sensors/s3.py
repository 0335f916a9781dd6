"""The S3 inbox: new objects under ``<prefix>inbox/`` in a bucket (any S3-compatible store).

Two ways in, one way through: S3 event notifications (``handle_notification``, fed by the
webhook and by the SQS reader, ``sqs.py``) and a periodic listing, which catches whatever
notification was never sent or got lost. Both only note the key; the sensor's worker takes it
(copy to ``<prefix>processing/``, then delete the source). The second sighting of a key finds
nothing left in inbox/, so a notification and a listing of the same object make one run.

Objects are complete once visible (S3 never shows a half upload), but a key is taken only
``settle_s`` after it was first seen, so a sidecar uploaded just after its photo still counts.
"""

from __future__ import annotations

import threading
from typing import Any

from flows.sensors.convention import is_job
from flows.sensors.s3_events import ObjectEvent, parse
from flows.sensors.store import INBOX, InboxStore


def s3_root(bucket: str, prefix: str) -> str:
    """``s3://bucket/prefix`` (no trailing slash); the areas are ``<root>/inbox/`` etc."""
    prefix = prefix.strip("/")
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


class S3Inbox:
    """A ``Source`` for the sensor: ``poll`` returns inbox-relative keys ready to take."""

    def __init__(
        self, store: InboxStore, bucket: str, prefix: str, settle_s: float, list_s: float
    ) -> None:
        self.store = store
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.inbox_prefix = f"{prefix}/{INBOX}/" if prefix else f"{INBOX}/"
        self.settle_s = settle_s
        self.list_s = list_s
        self._next_list = 0.0  # list at once: the backlog
        self._lock = threading.Lock()
        self._seen: dict[str, float | None] = {}  # rel -> first seen (None: not yet timed)

    # --- notifications (any thread) ---------------------------------------------------------
    def handle_notification(self, payload: dict[str, Any] | bytes | str) -> int:
        """Accept an S3 event message in any form ``s3_events.parse`` knows (the webhook's
        body, a queue message); returns how many new inbox objects it named. Events of other
        buckets or prefixes, deletions and test events name none. Raises ``NotAnS3Event`` (a
        ValueError) for a message that is no S3 event."""
        count = 0
        for event in parse(payload):
            rel = self._inbox_rel(event)
            if rel is not None:
                self._note(rel)
                count += 1
        return count

    def _inbox_rel(self, event: ObjectEvent) -> str | None:
        if not event.created or event.bucket != self.bucket:
            return None
        if not event.key.startswith(self.inbox_prefix):
            return None
        rel = event.key[len(self.inbox_prefix) :]
        return rel if is_job(rel) else None

    def _note(self, rel: str) -> None:
        with self._lock:
            self._seen.setdefault(rel, None)

    # --- the Source protocol (worker thread) -----------------------------------------------
    def poll(self, now: float) -> list[str]:
        if now >= self._next_list:
            self._next_list = now + self.list_s
            for rel in self.store.list(INBOX):
                if is_job(rel):
                    self._note(rel)
        with self._lock:
            ready: list[str] = []
            for rel, first in list(self._seen.items()):
                if first is None:
                    self._seen[rel] = now
                elif now - first >= self.settle_s:
                    ready.append(rel)
                    del self._seen[rel]
            return ready
