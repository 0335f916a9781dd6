"""Running `stylize` on many GPU machines with Prefect's own machinery: a work pool of
styledrop's worker type (``flows.worker``), one warm worker process per GPU, the
`stylize/stylize` deployment from deployments/prefect.yaml, and an automation that puts runs
lost with their worker or machine back in the queue.

Per GPU, not per machine: each GPU gets its own worker process with ``CUDA_VISIBLE_DEVICES``
set to that GPU alone, so every run it executes sees exactly one device (``cuda:0``), and the
worker's limit (``--limit``, default 1) is how many jobs share it.
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
DEPLOYMENT_FILE = PROJECT_ROOT / "deployments" / "prefect.yaml"
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


# --- server-side setup (idempotent) ---------------------------------------------------------


def ensure_work_pool(pool: str) -> bool:
    """Create the work pool ``pool`` of styledrop's worker type if it does not exist; True
    when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from flows.worker import WORKER_TYPE, StyledropWorker

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(pool)
        except ObjectNotFound:
            existing = None
        if existing is not None:
            if existing.type != WORKER_TYPE:
                raise ValueError(
                    f"work pool {pool!r} is of type {existing.type!r}, not {WORKER_TYPE!r}: "
                    "delete it (`prefect work-pool delete`) or set STYLEDROP_WORK_POOL"
                )
            return False
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=pool,
                    type=WORKER_TYPE,
                    base_job_template=StyledropWorker.get_default_base_job_template(),
                    description="styledrop: one warm worker per GPU (`styledrop worker`)",
                )
            )
        except ObjectAlreadyExists:  # another machine created it a moment ago
            return False
    logger.info("created work pool %s", pool)
    return True


def deployment_spec(path: Path = DEPLOYMENT_FILE) -> dict[str, Any]:
    """The `stylize` deployment as deployments/prefect.yaml defines it."""
    (spec,) = yaml.safe_load(path.read_text())["deployments"]
    return spec


def ensure_deployment(pool: str, *, update: bool) -> str:
    """Register `stylize/stylize` on ``pool`` from deployments/prefect.yaml when it is
    missing or on no pool (served, or made by hand); with ``update``: always. Returns what was
    done, for the log."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.callables import parameter_schema

    from flows.stylize import stylize

    spec = deployment_spec()
    full_name = f"{stylize.name}/{spec['name']}"
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_deployment_by_name(full_name)
        except ObjectNotFound:
            existing = None
        if existing is not None and not update and existing.work_pool_name:
            if existing.work_pool_name != pool:
                return (
                    f"deployment {full_name} exists on work pool {existing.work_pool_name!r}, "
                    f"not {pool!r}: its runs go there (`--setup-only` moves it)"
                )
            return f"deployment {full_name} exists"
        client.create_deployment(  # an upsert by flow and name
            flow_id=client.create_flow_from_name(stylize.name),
            name=spec["name"],
            entrypoint=spec["entrypoint"],
            path=str(PROJECT_ROOT),
            work_pool_name=pool,
            work_queue_name=spec["work_pool"].get("work_queue_name"),
            job_variables=spec["work_pool"].get("job_variables") or {},
            tags=spec.get("tags") or [],
            description=spec.get("description"),
            parameter_openapi_schema=parameter_schema(stylize).model_dump_for_openapi(),
        )
    return f"{'updated' if existing else 'created'} deployment {full_name} on pool {pool!r}"


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
