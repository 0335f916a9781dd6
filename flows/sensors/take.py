"""One take of a dropped file: the sensor's bookkeeping for it, kept as ``<name>.run.json``
beside the file in processing/ (and moved with it to archive/ or failed/), so that a restarted
sensor knows what it submitted and a person can see which flow run handled which file.

(The job record, ``_jobs/<job_id>/record.json``, is the flow's: flows/jobs.py.)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from flows.jobs import timestamp

BOOKKEEPING_SUFFIX = ".run.json"


@dataclass
class Take:
    inbox_rel: str  # where the file was dropped, relative to inbox/
    rel: str  # its name under processing/ (inbox_rel unless that name was busy)
    take_id: str  # random per take: tells this take's flow runs from an earlier drop's
    taken_at: str = field(default_factory=timestamp)
    sidecar: str | None = None  # the sidecar's name under processing/, if there was one
    content_sha256: str = ""
    key: str = ""  # idempotency key base (without the generation/attempt suffix)
    parameters: dict[str, Any] | None = None  # what the flow is asked for
    error: str | None = None  # a reason to fail without any run (bad sidecar, unreadable file)
    generation: int = 0  # bumped when the key only found an earlier drop's finished run
    attempts: int = 0  # resubmissions after a crashed or vanished run
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None  # "archived" | "failed" once decided (finishing may be resumed)
    reason: str | None = None  # why it failed, in plain words
    destination: str | None = None  # its name under archive/ or failed/

    @property
    def bookkeeping_rel(self) -> str:
        return self.rel + BOOKKEEPING_SUFFIX

    def idempotency_key(self) -> str:
        return f"{self.key}:g{self.generation}:a{self.attempts}"

    def note(self, what: str, **details: Any) -> None:
        """Append to the history kept in the bookkeeping file (what happened, when)."""
        self.history.append({"at": timestamp(), "what": what, **details})

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Take:
        obj = json.loads(data)
        known = {f.name for f in dataclasses.fields(cls)}
        # Tolerate fields written by a newer sensor rather than refusing to recover.
        return cls(**{k: v for k, v in obj.items() if k in known})
