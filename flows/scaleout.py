"""Running `stylize` on many GPU machines: one warm worker process (``flows.worker``) per GPU,
and handing a stopped worker's runs back to the pool.

Per GPU, not per machine: each GPU gets its own worker process with ``CUDA_VISIBLE_DEVICES``
set to that GPU alone, so every run it executes sees exactly one device (``cuda:0``), and the
worker's limit (``--limit``, default 1) is how many jobs share it.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from flows.settings import Settings

logger = logging.getLogger("styledrop.scaleout")

CPU = "cpu"


# --- this machine's workers ---------------------------------------------------------------


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set (ids or UUIDs; empty or
    -1 means none), else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [g.strip() for g in listed.split(",") if g.strip()]
        # CUDA ignores everything from the first invalid entry on; -1 is the usual "none".
        return ids[: ids.index("-1")] if "-1" in ids else ids
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch / broken driver: a CPU worker
        return []


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process: the device it owns and the name it goes by."""

    worker_name: str  # Prefect worker name, shown on each flow run it starts
    gpu: str  # a CUDA_VISIBLE_DEVICES entry, or "cpu"
    limit: int  # runs at once on this device (the worker's limit)

    def env(self) -> dict[str, str]:
        """What this worker's process gets on top of our environment."""
        # Hide the other GPUs from it; a CPU worker hides all of them, so a CPU-only run never
        # lands on a GPU another worker owns.
        return {
            "CUDA_VISIBLE_DEVICES": "" if self.gpu == CPU else self.gpu,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }


def default_name(settings: Settings) -> str:
    return settings.worker_name or socket.gethostname()


def plan_workers(name: str, gpus: list[str], limit: int) -> list[WorkerSlot]:
    """One worker per GPU (``<name>-gpu<id>``); without a GPU one CPU worker ``<name>``."""
    if not gpus:
        return [WorkerSlot(name, CPU, limit)]
    return [WorkerSlot(f"{name}-gpu{gpu}", gpu, limit) for gpu in gpus]


# --- handing runs back ----------------------------------------------------------------------


def hand_back(runs: list[Any], reason: str) -> int:
    """Put runs whose worker stopped before they finished back in the queue (AwaitingRetry)
    for another worker; they resume from their checkpoints. Each keeps its original scheduled
    time, so it is picked up before jobs submitted after it. Returns how many were handed
    back."""
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
                    logger.info("flow run %s not handed back: %s", run.id, result.details)
                    continue
                done += 1
            except Exception as exc:  # noqa: BLE001 - the automation catches what we miss
                logger.warning("could not hand back flow run %s: %s", run.id, exc)
    return done
