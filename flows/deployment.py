"""The one deployment every way in submits to, as the parts outside the flow know it: its
names, the run states that end a run, a failed run's reason in plain words, and a run as plain
data (`RunView`, what the sensors and the dashboard read of a flow run). No Prefect import:
plain facts any part may share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The flow's name (flows/stylize.py) and its deployment's (deployments/prefect.yaml).
FLOW_NAME = "stylize"
DEPLOYMENT_NAME = "stylize"
DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"

# The tag of a run started by a signed-in dashboard user: "submitter:<e-mail>" (a tag, so the
# Prefect UI shows it on the run and filters by it).
SUBMITTER_TAG = "submitter:"

# The events the inbox sensors emit about a dropped file: "styledrop.inbox.<what happened>"
# (received, archived, failed, ...). A failed one with no related flow run is a file refused
# before any run was made; the dashboard lists those.
INBOX_EVENT = "styledrop.inbox."
REFUSED_EVENT = INBOX_EVENT + "failed"

# Flow run state types after which nothing more happens to a run (Prefect's TERMINAL_STATES).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})

# Prefect words a failed run's state as "Flow run encountered an exception: JobRejected: <why>";
# a person needs only <why>.
_PREFECT_WORDS = re.compile(r"^(?:Flow|Task) run encountered an exception:?\s*")
_EXCEPTION_NAME = re.compile(r"^(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Rejected|Interrupt): ")


def plain_reason(message: str) -> str:
    """A run's state message without Prefect's wording around the exception."""
    return _EXCEPTION_NAME.sub("", _PREFECT_WORDS.sub("", message.strip()), count=1)


@dataclass(frozen=True)
class RunView:
    """A flow run of the deployment as the sensors and the dashboard read it."""

    id: str
    name: str = ""
    state_type: str = ""  # SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CANCELLING, ...
    state_name: str = ""  # finer than the type: "Late", "AwaitingRetry", "Completed"
    message: str = ""  # the state's message: a failed run's reason
    parameters: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    deployment_id: str | None = None
    state_time: datetime | None = None
    expected_start: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    total_run_time: float = 0.0  # seconds
    estimated_run_time: float = 0.0  # seconds, so far for a running run

    @classmethod
    def of(cls, run: Any) -> RunView:
        """From Prefect's `FlowRun` (read by attribute, so this module needs no Prefect)."""
        state = run.state
        return cls(
            id=str(run.id),
            name=run.name or "",
            state_type=state.type.value if state else "SCHEDULED",
            state_name=state.name if state else "Scheduled",
            message=(state.message or "") if state else "",
            parameters=dict(run.parameters or {}),
            labels=dict(run.labels or {}),
            tags=tuple(run.tags or ()),
            deployment_id=str(run.deployment_id) if run.deployment_id else None,
            state_time=state.timestamp if state else None,
            expected_start=run.expected_start_time,
            start_time=run.start_time,
            end_time=run.end_time,
            total_run_time=run.total_run_time.total_seconds(),
            estimated_run_time=run.estimated_run_time.total_seconds(),
        )

    @property
    def submitter(self) -> str:
        """Who started the run from the dashboard, when sign-in was on; "" otherwise."""
        found = (t.removeprefix(SUBMITTER_TAG) for t in self.tags if t.startswith(SUBMITTER_TAG))
        return next(found, "")

    @property
    def is_final(self) -> bool:
        return self.state_type in FINAL_STATES

    @property
    def duration_s(self) -> float | None:
        """Seconds it ran (so far, for a running run); None before it started."""
        if self.start_time is None:
            return None
        if self.is_final:
            return self.total_run_time or (
                (self.end_time - self.start_time).total_seconds() if self.end_time else None
            )
        return self.estimated_run_time or self.total_run_time
