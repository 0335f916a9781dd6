"""The service's overhead per job: the real local stack, N jobs through the deployment.

    .venv/bin/python bench/service.py                      # 20 jobs, 128 px, default steps
    .venv/bin/python bench/service.py --jobs 50 --size 512 --backbone auto   # on a GPU

Starts a Prefect server (SQLite, a temporary home) and the warm `styledrop worker` on loopback
ports of their own, submits ``--jobs`` jobs to `stylize/stylize` at once (each a distinct job:
its own seed), waits for them and prints one row per job:

- wait: seconds queued behind other jobs (the worker was busy);
- start: from the moment the job could start (submitted, or the previous job done) to the
  engine's first step - pick-up, process start (for a process worker), imports, model;
- engine: the engine's own seconds (``record.timings.engine_s``: optimisation, style targets);
- finish: from the engine's last step to the run's Completed state (writing the result and
  record, the summary, the final state).

and as its last line
``jobs=<n> wall_s=<x> engine_s=<sum> overhead_median_s=<median of start+finish>
throughput_ratio=<engine_s/wall_s>``.

For comparison, in the same run (``--baseline-jobs``, default: as many; 0: none), the same jobs
on Prefect's own process worker (`prefect worker start --type process`: a new Python process
per flow run), on a process pool and a deployment of its own, after the warm worker's; its
summary line comes before the warm worker's.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")

from engine.params import BACKBONES  # noqa: E402
from flows.deployment import DEPLOYMENT  # noqa: E402 - after the path set-up above


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Any, timeout: float, what: str, proc: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what}: process exited with code {proc.returncode}")
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - not there yet
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@dataclass
class Job:
    run_id: str
    submitted: float  # epoch seconds
    ready: float = 0.0  # when it could start: submitted, or the previous job's end
    engine_start: float = 0.0
    engine_s: float = 0.0
    engine_end: float = 0.0
    end: float = 0.0
    state: str = ""

    @property
    def start_s(self) -> float:
        return self.engine_start - self.ready

    @property
    def finish_s(self) -> float:
        return self.end - self.engine_end

    @property
    def overhead_s(self) -> float:
        return self.start_s + self.finish_s


def epoch(stamp: datetime) -> float:
    return stamp.timestamp()


def run_jobs(deployment: str, n: int, args: argparse.Namespace, storage: Path) -> list[Job]:
    """Submit ``n`` jobs at once, wait for all, and read their timings."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )
    from prefect.deployments import run_deployment

    from flows.layout import run_link_path
    from flows.storage import Storage

    options: dict[str, Any] = {"size": args.size}
    if args.iterations:
        options["iterations"] = args.iterations
    content = str(ROOT / "samples" / "landscape.jpg")
    submitted = []
    for i in range(n):
        t = time.time()
        parameters = {"content": content, "styles": ["mosaic"], "options": {**options, "seed": i}}
        run = run_deployment(deployment, parameters=parameters, timeout=0)
        submitted.append(Job(str(run.id), t))
    ids = [j.run_id for j in submitted]
    with get_client(sync_client=True) as client:

        def all_final() -> list[Any] | None:
            runs = []
            for i in range(0, n, 200):
                chunk = FlowRunFilter(id=FlowRunFilterId(any_=ids[i : i + 200]))
                runs += client.read_flow_runs(flow_run_filter=chunk, limit=200)
            return runs if len(runs) == n and all(r.state.is_final() for r in runs) else None

        runs = {str(r.id): r for r in wait_for(all_final, 120 + 600 * n, "all jobs to finish")}
        tasks = []
        for i in range(0, n, 200):  # the API's page size
            chunk = FlowRunFilter(id=FlowRunFilterId(any_=ids[i : i + 200]))
            named = TaskRunFilter(name=TaskRunFilterName(like_="stylize image"))
            tasks += client.read_task_runs(
                flow_run_filter=chunk, task_run_filter=named, limit=200
            )
    engine_tasks = {str(t.flow_run_id): t for t in tasks}
    store = Storage(str(storage))
    for job in submitted:
        run = runs[job.run_id]
        job.state = run.state.name
        job.end = epoch(run.end_time or run.state.timestamp)
        task = engine_tasks.get(job.run_id)
        link = store.read_json(run_link_path(job.run_id)) or {}
        record = store.read_json(link["record"]) if link.get("record") else None
        if task is None or not record or not run.state.is_completed():
            continue
        job.engine_s = record["timings"]["engine_s"] or 0.0
        job.engine_end = epoch(task.end_time)
        job.engine_start = job.engine_end - job.engine_s
    # One job at a time per worker: a job can start when it is submitted and the one before
    # it (in the order they ran) is done.
    previous_end = 0.0
    for job in sorted(submitted, key=lambda j: j.engine_start):
        job.ready = max(job.submitted, previous_end)
        previous_end = job.end
    return submitted


def report(label: str, jobs: list[Job]) -> str:
    print(f"\n{label}")
    print("| job | state | wait s | start s | engine s | finish s | overhead s |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for i, j in enumerate(jobs, 1):
        print(
            f"| {i} | {j.state} | {j.ready - j.submitted:.2f} | {j.start_s:.2f} | "
            f"{j.engine_s:.2f} | {j.finish_s:.2f} | {j.overhead_s:.2f} |"
        )
    wall = max(j.end for j in jobs) - min(j.submitted for j in jobs)
    engine_s = sum(j.engine_s for j in jobs)
    overhead = statistics.median(j.overhead_s for j in jobs)
    failed = sum(j.state != "Completed" for j in jobs)
    return (
        f"jobs={len(jobs)} wall_s={wall:.1f} engine_s={engine_s:.1f} "
        f"overhead_median_s={overhead:.2f} throughput_ratio={engine_s / wall:.2f}"
        + (f" failed={failed}" if failed else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=None, help="default: the engine's")
    parser.add_argument("--backbone", default="random", choices=BACKBONES)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--baseline-jobs", type=int, default=None,
        help="jobs on Prefect's process worker for comparison (default: --jobs; 0: none)",
    )  # fmt: skip
    args = parser.parse_args()
    baseline_jobs = args.jobs if args.baseline_jobs is None else args.baseline_jobs

    tmp = Path(tempfile.mkdtemp(prefix="styledrop-bench-"))
    api = f"http://127.0.0.1:{free_port()}/api"
    port = api.rsplit(":", 1)[1].split("/")[0]
    server_env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_UI_ENABLED": "false"}
    server_env.pop("PREFECT_API_URL", None)
    server = start(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
        server_env,
        tmp / "server.log",
    )
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # as `styledrop up` runs it
        "PYTHONPATH": str(ROOT),
        "STYLEDROP_DATA_DIR": str(tmp / "data"),
        "STYLEDROP_BACKBONE": args.backbone,
        "STYLEDROP_DEVICE": args.device,
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=env["PREFECT_HOME"])
    procs: list[subprocess.Popen[bytes]] = [server]
    lines = []
    try:
        import httpx

        wait_for(lambda: httpx.get(f"{api}/health").status_code == 200, 120, "the server", server)
        load = os.getloadavg()[0]
        warm_env = {**env, "STYLEDROP_STORAGE": str(tmp / "warm")}
        log = tmp / "worker.log"
        worker = start(
            [sys.executable, "-m", "flows.cli", "worker", "--name", "bench"], warm_env, log
        )
        procs.append(worker)
        wait_for(lambda: "ready" in log.read_text(), 300, "the warm worker", worker)
        jobs = run_jobs(DEPLOYMENT, args.jobs, args, tmp / "warm")
        warm = report("warm styledrop worker", jobs)
        stop(worker)
        if baseline_jobs:
            label = "Prefect's process worker (a process per run)"
            lines.append((label, baseline(args, baseline_jobs, env, tmp, procs)))
        lines.append(("warm styledrop worker", warm))
    finally:
        for proc in reversed(procs):
            stop(proc)
    print(
        f"\nmachine: {platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}, "
        f"load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f}; "
        f"size {args.size}, iterations {args.iterations or 'default'}, backbone {args.backbone}"
    )
    for label, line in lines[:-1]:
        print(f"{label}: {line}")
    if baseline_jobs:
        per_job = {label: wall_per_job(line) for label, line in lines}
        base, ours = per_job.values()
        print(f"wall s per job: process worker {base:.1f}, warm worker {ours:.1f} "
              f"({base / ours:.1f}x the throughput)")  # fmt: skip
    print(lines[-1][1])
    return 0


def wall_per_job(summary: str) -> float:
    fields = dict(item.split("=") for item in summary.split())
    return float(fields["wall_s"]) / int(fields["jobs"])


def baseline(
    args: argparse.Namespace, n: int, env: dict[str, str], tmp: Path, procs: list[Any]
) -> str:
    """The same jobs on Prefect's process worker, a pool and deployment of its own."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    from flows.stylize import stylize

    pool = "bench-process"
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name=pool, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )  # fmt: skip
        client.create_deployment(
            flow_id=client.create_flow_from_name(stylize.name),
            name=pool,
            entrypoint="flows/stylize.py:stylize",
            path=str(ROOT),
            work_pool_name=pool,
        )
    process_env = {**env, "STYLEDROP_STORAGE": str(tmp / "process")}
    log = tmp / "process-worker.log"
    worker = start(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
         "--limit", "1", "--name", pool],
        process_env,
        log,
    )  # fmt: skip
    procs.append(worker)
    wait_for(lambda: "started!" in log.read_text(), 120, "the process worker", worker)
    jobs = run_jobs(f"stylize/{pool}", n, args, tmp / "process")
    stop(worker)
    return report("Prefect's process worker (a process per run)", jobs)


if __name__ == "__main__":
    sys.exit(main())
