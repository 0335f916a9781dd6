"""`styledrop worker`: this machine's share of a work pool - one Prefect process worker per
GPU, each owning its GPU (see ``flows.scaleout``), all pointed at a shared Prefect server
(PREFECT_API_URL) and shared storage (STYLEDROP_STORAGE=s3://...).

At start it makes sure the pool, the lost-run automation and this machine's per-GPU
concurrency limits exist (idempotent). ``--setup-only`` is the administrator's one-time step:
the pool and the automation (created or updated to this machine's settings), then exit.

Stopping (SIGTERM or Ctrl-C): the Prefect workers stop taking runs at once (they are frozen,
see ``drain``); running jobs get ``--grace`` seconds to finish. Then - or at a second signal -
the workers and their flow-run processes are stopped and the unfinished runs handed back to the
pool (AwaitingRetry), where another worker resumes them from their checkpoints. A machine that
dies without any of this is covered by the lost-run automation, only later
(STYLEDROP_LOST_RUN_AFTER_S).

Decision: a Prefect worker that dies on its own stops the whole command (exit 1), like `up`;
the service manager running `styledrop worker` restarts it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from flows import stack
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
        help="create the work pool if missing, create or update the lost-run automation "
        "(STYLEDROP_LOST_RUN_AFTER_S) and the alerts (STYLEDROP_ALERT_*), then exit: the "
        "one-time step for a new server",
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
    slots = scaleout.plan_workers(name, gpus, args.limit, settings)
    say(f"Prefect API {api}; storage {settings.storage_root}")
    try:
        if scaleout.ensure_work_pool(args.pool):
            say(f"created work pool {args.pool!r}")
        say(scaleout.ensure_recovery_automation(settings, update=args.setup_only))
        if args.setup_only:
            from flows.alerts import setup_alerts

            say(setup_alerts(settings))
            return 0
        # This machine's limits only when it works: an admin's --setup-only has no GPUs.
        scaleout.ensure_slot_limits(slots, settings)
    except Exception as exc:  # noqa: BLE001 - one readable line, not a traceback
        say(f"error: cannot set up on {api}: {exc}")
        return 1
    if not settings.storage_root.startswith(("s3://", "s3a://")):
        say(
            "note: storage is a local folder; with several machines set STYLEDROP_STORAGE to a "
            "shared s3:// root"
        )
    return supervise(args, settings, slots)


def api_url(settings: Settings) -> str:
    """The configured Prefect API (PREFECT_API_URL or the active profile), else the local
    `up` server's - never a temporary server that would vanish with this process. Put in our
    environment too, for the Prefect workers and their runs."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url or f"{settings.prefect_ui_url}/api"
    os.environ["PREFECT_API_URL"] = url
    return url


def parse_gpus(text: str) -> list[str]:
    if text.strip().lower() in ("", "none", "cpu", "-1"):
        return []
    return [g.strip() for g in text.split(",") if g.strip()]


def supervise(args: argparse.Namespace, settings: Settings, slots: list[WorkerSlot]) -> int:
    from flows import scaleout

    stop_requests: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requests.append(signum)
        if len(stop_requests) == 1:
            say(f"{signal.Signals(signum).name}: no new jobs; finishing running ones")
        elif len(stop_requests) == 2:
            say("second signal: stopping running jobs now and handing them back")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    children = []
    for slot in slots:
        env = dict(os.environ)
        env.update(slot.env())
        spec = stack.ChildSpec(
            slot.worker_name,
            scaleout.worker_command(sys.executable, args.pool, slot),
            env,
            # We may have frozen it (see drain): only SIGKILL ends a stopped process.
            parent_death_signal=signal.SIGKILL,
        )
        children.append(stack.start_child(spec, log_dir=None))
        device = "CPU" if slot.gpu == scaleout.CPU else f"GPU {slot.gpu}"
        say(
            f"worker {slot.worker_name!r} on pool {args.pool!r}: {device}, {slot.limit} job(s) "
            f"at once, concurrency limit {slot.limit_name!r}"
        )

    code = 0
    while not stop_requests:
        for child in children:
            child.remember_descendants()
            if not child.alive():
                say(f"error: Prefect worker {child.name} exited (code {child.proc.returncode})")
                stop_requests.append(0)
                code = 1
        time.sleep(0.5)
    drain(children, args.grace, stop_requests)
    held = stop_workers(children, args.pool, {s.worker_name for s in slots})
    if held:
        say(f"handed {held} unfinished run(s) back to the pool")
    return code


def drain(children: list[stack.Child], grace: float, stop_requests: list[int]) -> None:
    """Stop the Prefect workers taking runs, and give the runs they started ``grace`` seconds
    (or until a second signal) to finish.

    Not with the worker's own SIGINT: a Prefect process worker then exits within a second and
    kills its flow-run processes, leaving their runs Running. Frozen with SIGSTOP it polls no
    more, while its runs - processes in sessions of their own - carry on and report their own
    end to the server. (A frozen worker stops relaying its runs' console output; a run would
    only block on that pipe after 64 KiB, far more than a job prints in a grace period, and
    its logs still reach the Prefect API.)
    """
    asked = len(stop_requests)
    for child in children:
        child.remember_descendants()
        stack.signal_pid(child.pid, signal.SIGSTOP)
    deadline = time.monotonic() + grace
    while runs_alive(children) and time.monotonic() < deadline:
        if len(stop_requests) > asked:
            return
        time.sleep(0.2)


def runs_alive(children: list[stack.Child]) -> bool:
    """Is any process a Prefect worker started (a flow run) still running?"""
    for child in children:
        child.remember_descendants()
    return any(stack.pid_alive(p) for c in children for p in c.seen)


def stop_workers(children: list[stack.Child], pool: str, names: set[str]) -> int:
    """Kill what is left (workers first, so none reports its runs Crashed; SIGKILL also ends
    a stopped process), then hand the runs they held and did not finish back to the pool.
    Returns how many were handed back."""
    from flows import scaleout

    stack.kill_now(children)
    try:
        runs = scaleout.runs_held_by(pool, names)
        return scaleout.hand_back(
            runs,
            "Its worker was stopped before the job finished; rescheduled, it resumes from its "
            "last checkpoint on the next free worker.",
        )
    except Exception as exc:  # noqa: BLE001 - the lost-run automation is the fallback
        say(f"could not hand runs back ({exc}); the lost-run automation will reschedule them")
        return 0
