"""`styledrop worker`: this machine's share of a work pool - one warm styledrop worker per GPU
(``flows.worker``: the model loaded once, each flow run in a thread of the worker's process),
all pointed at a shared Prefect server (PREFECT_API_URL) and shared storage
(STYLEDROP_STORAGE=s3://...). `styledrop up` runs the same worker locally.

At start it makes sure the pool (of styledrop's worker type), the `stylize/stylize`
deployment (deployments/prefect.yaml) and the lost-run automation exist
(``flows.server_setup``, idempotent). ``--setup-only`` is the administrator's one-time step:
those and the alerts created or updated to this checkout and these settings, then exit.

The GPU plan (below): with one device (a CPU machine, one GPU, or ``--gpus ID``) the worker
runs in this process; with several, one child process per GPU (`styledrop worker --gpus ID`),
each seeing only its GPU (``CUDA_VISIBLE_DEVICES``, so every run sees exactly one device,
``cuda:0``), and a lock file per GPU keeps a second worker off it.

Stopping (SIGTERM or Ctrl-C, passed on to the children): no new jobs; running ones get
``--grace`` seconds to finish, then are checkpointed and handed back to the pool; a second
signal hands them back at once. A machine that dies without any of this is covered by the
lost-run automation, only later (STYLEDROP_LOST_RUN_AFTER_S).

Decision: a worker that dies on its own (a CUDA error: exit 1) stops the whole command with
its exit code, after stopping the others gracefully; the service manager restarts it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flows import stack
from flows.deployment import DEPLOYMENT
from flows.settings import Settings

CPU = "cpu"


def register(parser: argparse.ArgumentParser) -> None:
    from flows.settings import get_settings

    s = get_settings()
    parser.add_argument(
        "--name",
        default=None,
        help="this machine's name in Prefect (worker <name>-gpu<id>, or <name> on CPU); "
        "default STYLEDROP_WORKER_NAME or the hostname",
    )
    parser.add_argument(
        "--pool", default=s.work_pool, help=f"work pool (STYLEDROP_WORK_POOL, {s.work_pool})"
    )
    parser.add_argument(
        "--gpus",
        default=None,
        help="comma-separated GPU ids to use; default: CUDA_VISIBLE_DEVICES, else all GPUs; "
        "'none' for a CPU worker",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=s.gpu_slots,
        help=f"jobs at once per GPU (STYLEDROP_GPU_SLOTS, {s.gpu_slots})",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=s.worker_grace_s,
        help="seconds running jobs get to finish after SIGTERM before they are handed back "
        f"(STYLEDROP_WORKER_GRACE_S, {s.worker_grace_s:g})",
    )
    parser.add_argument(
        "--setup-only",
        action="store_true",
        help=f"create or update the work pool, the {DEPLOYMENT} deployment, the lost-run "
        "automation (STYLEDROP_LOST_RUN_AFTER_S) and the alerts (STYLEDROP_ALERT_*), then exit: "
        "the one-time step for a new server",
    )


def say(message: str) -> None:
    print(f"styledrop worker: {message}", flush=True)


def run(args: argparse.Namespace) -> int:
    from flows.prefect_api import connected
    from flows.settings import get_settings

    settings = get_settings()
    if args.limit < 1:
        say("error: --limit must be at least 1")
        return 2
    with connected(settings) as api:
        return set_up_and_serve(args, settings, api)


def machine_name(name: str | None, settings: Settings) -> str:
    """This machine's name in the pool: --name, else STYLEDROP_WORKER_NAME, else the hostname
    (its workers are ``<name>`` or ``<name>-gpu<id>``)."""
    return name or settings.worker_name or socket.gethostname()


def set_up_and_serve(args: argparse.Namespace, settings: Settings, api: str) -> int:
    name = machine_name(args.name, settings)
    gpus = parse_gpus(args.gpus) if args.gpus is not None else visible_gpus()
    slots = plan_workers(name, gpus, args.limit)
    say(f"Prefect API {api}; storage {settings.storage_root}")
    try:
        from flows.server_setup import set_up

        admin = args.setup_only
        for done in set_up(settings, pool=args.pool, update=admin, alerts=admin):
            say(done)
    except Exception as exc:  # noqa: BLE001 - one readable line, not a traceback
        from flows.api_auth import refusal

        say(f"error: {refusal(exc) or f'cannot set up on {api}: {exc}'}")
        return 1
    if args.setup_only:
        return 0
    if not settings.storage_root.startswith(("s3://", "s3a://")):
        say(
            "note: storage is a local folder; with several machines set STYLEDROP_STORAGE to a "
            "shared s3:// root"
        )
    if len(slots) == 1:
        return run_here(args, slots[0])
    return run_children(args, name, slots)


# --- the GPU plan -------------------------------------------------------------------------------


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


def parse_gpus(text: str) -> list[str]:
    if text.strip().lower() in ("", "none", "cpu", "-1"):
        return []
    return [g.strip() for g in text.split(",") if g.strip()]


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
        return {"CUDA_VISIBLE_DEVICES": "" if self.gpu == CPU else self.gpu}


def plan_workers(name: str, gpus: list[str], limit: int) -> list[WorkerSlot]:
    """One worker per GPU (``<name>-gpu<id>``); without a GPU one CPU worker ``<name>``."""
    if not gpus:
        return [WorkerSlot(name, CPU, limit)]
    return [WorkerSlot(f"{name}-gpu{gpu}", gpu, limit) for gpu in gpus]


# --- running it ---------------------------------------------------------------------------------


def run_here(args: argparse.Namespace, slot: WorkerSlot) -> int:
    """One worker in this process, owning ``slot``'s device."""
    from flows.worker import serve_worker

    # Before anything initialises CUDA in this process.
    os.environ.update(slot.env())
    lock = None
    if slot.gpu != CPU:
        # Two workers on one GPU would exceed its limit: one per GPU on this machine.
        lock = stack.StackLock(Path(tempfile.gettempdir()) / f"styledrop-gpu-{slot.gpu}.lock")
        holder = lock.acquire()
        if holder is not None:
            say(f"error: GPU {slot.gpu} already has a styledrop worker (pid {holder or '?'})")
            return 1
    device = "CPU" if slot.gpu == CPU else f"GPU {slot.gpu}"
    say(f"worker {slot.worker_name!r} on pool {args.pool!r}: {device}, {slot.limit} job(s) at once")
    try:
        return serve_worker(args.pool, slot.worker_name, slot.limit, args.grace)
    finally:
        if lock is not None:
            lock.release()


def run_children(args: argparse.Namespace, name: str, slots: list[WorkerSlot]) -> int:
    """One child `styledrop worker --gpus ID` per GPU; signals are passed on to them."""
    children: list[stack.Child] = []

    def pass_on(signum: int, _count: int) -> None:
        for child in children:
            stack.signal_pid(child.pid, signum)

    signals = stack.Signals(pass_on)
    for slot in slots:
        argv = [sys.executable, "-m", "flows.cli", "worker", "--gpus", slot.gpu, "--name", name]
        argv += ["--pool", args.pool, "--limit", str(slot.limit), "--grace", str(args.grace)]
        env = {**os.environ, **slot.env()}
        children.append(stack.start_child(stack.ChildSpec(slot.worker_name, argv, env), None))
    died = stack.supervise(children, signals)
    if died is not None:
        code = died.proc.returncode
        say(f"error: worker {died.name} exited (code {code}); stopping the others")
        pass_on(signal.SIGTERM, 1)
    stack.wait_exit(children)
    return (died.proc.returncode if died else 0) or max(c.proc.returncode or 0 for c in children)
