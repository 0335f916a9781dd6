"""Handing a stopping worker's unfinished runs back to the pool.

The warm worker (flows/worker.py) asks for it (``request``) when it stops with jobs still
running. Each job's progress callback (flows/tasks/progress.py) sees it at its next engine step,
writes a checkpoint and parks its thread (``park``); the worker then puts the runs back in the
queue (``hand_back``, AwaitingRetry) without the flow reporting an end of its own, and the
process exits. Another worker resumes them from their checkpoints.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

HANDED_BACK_MESSAGE = (
    "Its worker was stopped before the job finished; rescheduled, it resumes from its last "
    "checkpoint on the next free worker."
)

log = logging.getLogger("styledrop.worker")

_requested = threading.Event()
_parked: set[str] = set()  # flow run ids checkpointed and parked


def request() -> None:
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def park(flow_run_id: str) -> None:
    """Mark this run parked and block its thread until the process ends: never returns."""
    _parked.add(flow_run_id)
    threading.Event().wait()


def parked() -> set[str]:
    return set(_parked)


def hand_back(runs: list[Any], reason: str = HANDED_BACK_MESSAGE) -> int:
    """Put runs whose worker stopped before they finished back in the queue (AwaitingRetry)
    for another worker. Each keeps its original scheduled time, so it is picked up before jobs
    submitted after it. Returns how many were handed back."""
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry

    done = 0
    with get_client(sync_client=True) as client:
        for run in runs:
            try:
                state = AwaitingRetry(message=reason, scheduled_time=run.expected_start_time)
                # Not forced: Prefect's rules refuse it for a run being cancelled.
                result = client.set_flow_run_state(run.id, state)
                if result.status.value != "ACCEPT":
                    log.info("flow run %s not handed back: %s", run.id, result.details)
                    continue
                done += 1
            except Exception as exc:  # noqa: BLE001 - the automation catches what we miss
                log.warning("could not hand back flow run %s: %s", run.id, exc)
    return done
