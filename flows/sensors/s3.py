"""The S3 inbox: new objects under ``<prefix>inbox/`` in a bucket (any S3-compatible store).

Two ways in, one way through: S3 event notifications (``handle_notification``, fed by the
webhook or by anything that reads a queue) and a periodic listing, which catches whatever
notification was never sent or got lost. Both only note the key; the sensor's worker takes it
(copy to ``<prefix>processing/``, then delete the source). The second sighting of a key finds
nothing left in inbox/, so a notification and a listing of the same object make one run.

Objects are complete once visible (S3 never shows a half upload), but a key is taken only
``settle_s`` after it was first seen, so a sidecar uploaded just after its photo still counts.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import unquote_plus

from flows.sensors.convention import is_job
from flows.sensors.store import INBOX, InboxStore

log = logging.getLogger("styledrop.sensor")


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
        """Accept an S3 event notification (``{"Records": [...]}``, as S3 sends to a queue or a
        webhook, MinIO too); returns how many new inbox objects it named. Anything else
        (a test event, other buckets or prefixes, deletions) is ignored. Raises ValueError
        only for a payload that is not JSON."""
        if isinstance(payload, bytes | str):
            payload = json.loads(payload)
        if not isinstance(payload, dict):
            raise ValueError("an S3 notification is a JSON object with a 'Records' list")
        count = 0
        for record in payload.get("Records") or []:
            rel = self._inbox_rel(record)
            if rel is not None:
                self._note(rel)
                count += 1
        return count

    def _inbox_rel(self, record: Any) -> str | None:
        try:
            event = str(record.get("eventName", ""))
            s3 = record["s3"]
            bucket = s3["bucket"]["name"]
            # Keys arrive URL-encoded, spaces as "+" (form encoding): "my+photo.jpg".
            key = unquote_plus(s3["object"]["key"])
        except (AttributeError, KeyError, TypeError):
            log.warning("ignored a notification record without bucket/key: %.200r", record)
            return None
        if not event.removeprefix("s3:").startswith("ObjectCreated"):
            return None
        if bucket != self.bucket or not key.startswith(self.inbox_prefix):
            return None
        rel = key[len(self.inbox_prefix) :]
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
