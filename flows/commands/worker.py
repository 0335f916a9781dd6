"""`styledrop worker`: this machine's share of a work pool - one warm styledrop worker per GPU
(``flows.worker``: the model loaded once, each flow run in a thread of the worker's process),
all pointed at a shared Prefect server (PREFECT_API_URL) and shared storage
(STYLEDROP_STORAGE=s3://...). `styledrop up` runs the same worker locally.

At start it makes sure the pool (of styledrop's worker type), the `stylize/stylize`
deployment (deployments/prefect.yaml) and the lost-run automation exist
(``flows.server_setup``, idempotent). ``--setup-only`` is the administrator's one-time step:
those and the alerts created or updated to this checkout and these settings, then exit.

With one device (a CPU machine, one GPU, or ``--gpus ID``) the worker runs in this process;
with several, one child process per GPU (`styledrop worker --gpus ID`), each seeing only its
GPU. Stopping (SIGTERM or Ctrl-C, passed on to the children): no new jobs; running ones get
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
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flows import stack
from flows.deployment import DEPLOYMENT
from flows.settings import Settings

if TYPE_CHECKING:
    from flows.scaleout import WorkerSlot


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
    # Before Prefect is imported (by the setup below): no telemetry, ever.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.settings import get_settings

    settings = get_settings()
    if args.limit < 1:
        say("error: --limit must be at least 1")
        return 2
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = api_url(settings)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        return setup_and_supervise(args, settings, api)


def setup_and_supervise(args: argparse.Namespace, settings: Settings, api: str) -> int:
    from flows import scaleout

    name = args.name or scaleout.default_name(settings)
    gpus = parse_gpus(args.gpus) if args.gpus is not None else scaleout.visible_gpus()
    slots = scaleout.plan_workers(name, gpus, args.limit)
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
    return supervise(args, name, slots)


def api_url(settings: Settings) -> str:
    """The configured Prefect API (PREFECT_API_URL or the active profile), else the local
    `up` server's - never a temporary server that would vanish with this process. Put in our
    environment too, for the child workers."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url or f"{settings.prefect_ui_url}/api"
    os.environ["PREFECT_API_URL"] = url
    return url


def parse_gpus(text: str) -> list[str]:
    if text.strip().lower() in ("", "none", "cpu", "-1"):
        return []
    return [g.strip() for g in text.split(",") if g.strip()]


def run_here(args: argparse.Namespace, slot: WorkerSlot) -> int:
    """One worker in this process, owning ``slot``'s device."""
    from flows import scaleout
    from flows.worker import serve_worker

    # Before anything initialises CUDA in this process.
    os.environ.update(slot.env())
    lock = None
    if slot.gpu != scaleout.CPU:
        # Two workers on one GPU would exceed its limit: one per GPU on this machine.
        lock = stack.StackLock(Path(tempfile.gettempdir()) / f"styledrop-gpu-{slot.gpu}.lock")
        holder = lock.acquire()
        if holder is not None:
            say(f"error: GPU {slot.gpu} already has a styledrop worker (pid {holder or '?'})")
            return 1
    device = "CPU" if slot.gpu == scaleout.CPU else f"GPU {slot.gpu}"
    say(f"worker {slot.worker_name!r} on pool {args.pool!r}: {device}, {slot.limit} job(s) at once")
    try:
        return serve_worker(args.pool, slot.worker_name, slot.limit, args.grace)
    finally:
        if lock is not None:
            lock.release()


def supervise(args: argparse.Namespace, name: str, slots: list[WorkerSlot]) -> int:
    """One child `styledrop worker --gpus ID` per GPU; signals are passed on to them."""
    stop_requests: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requests.append(signum)
        for child in children:
            stack.signal_pid(child.pid, signum)

    children: list[stack.Child] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    for slot in slots:
        argv = [
            sys.executable,
            "-m",
            "flows.cli",
            "worker",
            "--gpus",
            slot.gpu,
            "--name",
            name,
            "--pool",
            args.pool,
            "--limit",
            str(slot.limit),
            "--grace",
            str(args.grace),
        ]
        env = {**os.environ, **slot.env()}
        children.append(stack.start_child(stack.ChildSpec(slot.worker_name, argv, env), None))

    code = 0
    while any(c.alive() for c in children):
        for child in children:
            if not child.alive() and child.proc.returncode and not stop_requests:
                say(
                    f"error: worker {child.name} exited (code {child.proc.returncode}); "
                    "stopping the others"
                )
                code = child.proc.returncode
                on_signal(signal.SIGTERM, None)
        time.sleep(0.5)
    return code or max((c.proc.returncode or 0) for c in children)
