"""Running `stylize` on many GPU machines with Prefect's own machinery: a process work pool,
one Prefect worker per GPU, a concurrency limit per GPU, and an automation that puts runs
lost with their worker or machine back in the queue.

Per GPU, not per machine: each GPU gets its own Prefect worker process with
``CUDA_VISIBLE_DEVICES`` set to that GPU alone, so every flow run it starts sees exactly one
device (``cuda:0`` inside the run), and ``STYLEDROP_GPU_LIMIT`` naming that GPU's global
concurrency limit, which the flow's ``flows.gpu.gpu_slot`` takes a slot of. The worker's
``--limit`` keeps it from starting more runs than the GPU has slots; the limit guards the GPU
against anything else started on it (a second worker by mistake, a restarted worker whose
killed run still holds its lease).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from flows.settings import PROJECT_ROOT, Settings

logger = logging.getLogger("styledrop.scaleout")

RECOVERY_AUTOMATION_FILE = PROJECT_ROOT / "deployments" / "recover-lost-runs.yaml"
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
    """One Prefect worker process: the device it owns and the names it goes by."""

    worker_name: str  # Prefect worker name, shown on each flow run it starts
    gpu: str  # a CUDA_VISIBLE_DEVICES entry, or "cpu"
    limit_name: str  # the global concurrency limit for this device
    limit: int  # runs at once on this device (worker --limit = concurrency limit size)

    def env(self) -> dict[str, str]:
        """What this worker (and so every flow run it starts) gets on top of our env."""
        env = {
            "STYLEDROP_GPU_LIMIT": self.limit_name,
            "STYLEDROP_GPU_SLOTS": str(self.limit),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        # Hide the other GPUs from this worker's runs; a CPU worker hides all of them, so a
        # CPU-only run never lands on a GPU another worker owns.
        env["CUDA_VISIBLE_DEVICES"] = "" if self.gpu == CPU else self.gpu
        return env


def default_name(settings: Settings) -> str:
    return settings.worker_name or socket.gethostname()


def plan_workers(name: str, gpus: list[str], limit: int, settings: Settings) -> list[WorkerSlot]:
    """One worker per GPU (``<name>-gpu<id>``, limit ``<gpu_limit>-<name>-<id>``); without a
    GPU one CPU worker named ``<name>`` (limit ``<gpu_limit>-<name>-cpu``)."""
    if not gpus:
        return [WorkerSlot(name, CPU, f"{settings.gpu_limit}-{name}-{CPU}", limit)]
    return [
        WorkerSlot(f"{name}-gpu{gpu}", gpu, f"{settings.gpu_limit}-{name}-{gpu}", limit)
        for gpu in gpus
    ]


def worker_command(python: str, pool: str, slot: WorkerSlot) -> list[str]:
    return [
        python,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        slot.worker_name,
        "--limit",
        str(slot.limit),
        # The pool is created by ensure_work_pool (with the process template) or by hand.
        "--install-policy",
        "never",
    ]


# --- server-side setup (idempotent) ---------------------------------------------------------


def ensure_work_pool(pool: str) -> bool:
    """Create the process work pool ``pool`` if it does not exist; True when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(pool)
        except ObjectNotFound:
            existing = None
        if existing is not None:
            if existing.type != "process":
                logger.warning("work pool %s is of type %s, not process", pool, existing.type)
            return False
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=pool,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="styledrop: one Prefect worker per GPU (`styledrop worker`)",
                )
            )
        except ObjectAlreadyExists:  # another machine created it a moment ago
            return False
    logger.info("created process work pool %s", pool)
    return True


def ensure_slot_limits(slots: list[WorkerSlot], settings: Settings) -> None:
    """The per-device concurrency limits, sized to the worker's limit (flows.gpu owns them)."""
    from flows.gpu import ensure_gpu_limit

    for slot in slots:
        ensure_gpu_limit(
            settings.model_copy(update={"gpu_limit": slot.limit_name, "gpu_slots": slot.limit}),
            update=True,
        )


def recovery_automation_spec(settings: Settings, path: Path = RECOVERY_AUTOMATION_FILE) -> Any:
    """deployments/recover-lost-runs.yaml as an ``AutomationCore``, with the silence window
    from the settings."""
    from prefect.events.schemas.automations import AutomationCore

    data = yaml.safe_load(path.read_text())
    # The window is checked against the heartbeat when the settings are loaded.
    data["trigger"]["within"] = settings.lost_run_after_s
    return AutomationCore.model_validate(data)


def ensure_recovery_automation(settings: Settings, *, update: bool) -> str:
    """Create the lost-run automation if it is missing; with ``update``, also make an existing
    one match this file and these settings. Returns what was done, for the log.

    Workers do not ``update``: machines with different settings would overwrite each other's
    window at every start. Setting it is an administrator's step (``worker --setup-only``).
    """
    from prefect.client.orchestration import get_client

    spec = recovery_automation_spec(settings)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(spec.name)
        if not existing:
            client.create_automation(spec)
            return f"created automation {spec.name!r} (lost after {_window(spec)} s)"
        current = existing[0]
        if update:
            client.update_automation(current.id, spec)
            for extra in existing[1:]:  # copies made by hand with `prefect automation create`
                client.delete_automation(extra.id)
            return f"updated automation {spec.name!r} (lost after {_window(spec)} s)"
        return f"automation {spec.name!r} exists (lost after {_window(current)} s)"


def _window(automation: Any) -> int:
    within = getattr(automation.trigger, "within", None)
    return int(within.total_seconds()) if isinstance(within, timedelta) else int(within or 0)


# --- handing runs back ----------------------------------------------------------------------


def runs_held_by(pool: str, worker_names: set[str]) -> list[Any]:
    """Flow runs of ``pool`` that the named workers started and that are not finished."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING])
                )
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        )
    return [r for r in runs if (r.labels or {}).get("prefect.worker.name") in worker_names]


def hand_back(runs: list[Any], reason: str) -> int:
    """Put runs whose processes were stopped back in the queue (AwaitingRetry) for another
    worker; they resume from their checkpoints. Each keeps its original scheduled time, so it
    is picked up before jobs submitted after it. Returns how many were handed back."""
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
