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

then the summary, also its last line:
``jobs=<n> wall_s=<x> engine_s=<sum> overhead_median_s=<median of start+finish>
throughput_ratio=<engine_s/wall_s> api_calls_per_job=<r> events_per_job=<e>``,
and the requests and events per job by kind.

Prefect API requests: the worker (and every flow run it starts, in its process or, for the
process worker, in the processes it starts) talks to the server through a counting proxy of
the bench's (``count_proxy``: a TCP forwarder in a process of its own that passes the bytes on
untouched and logs each HTTP request and each websocket message sent to ``/api/events/in``, i.e.
each event), while the bench's own submissions and polling go to the server directly, so they
are not counted. ``api_calls_per_job`` is the worker's requests from the first submission until
all runs are final, divided by the jobs: it includes what the worker does while it waits (its
poll for scheduled runs every second), which the table by kind shows apart. ``events_per_job``
is the events it sent in that time (the websocket's auth message is not an event).

For comparison, in the same run (``--baseline-jobs``, default: as many; 0: none), the same jobs
on Prefect's own process worker (`prefect worker start --type process`: a new Python process
per flow run), on a process pool and a deployment of its own, after the warm worker's; its
summary line comes before the warm worker's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
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


# --- counting the worker's Prefect API requests -------------------------------------------------

IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def count_proxy(port: int, upstream: int, log_path: str) -> None:
    """Forward 127.0.0.1:``port`` to the server at 127.0.0.1:``upstream``, writing a line per
    request (``<epoch> <METHOD> <path, ids as {id}>``) and per event sent over a websocket
    (``<epoch> EVENT <name>``) to ``log_path``. Runs in a process of its own (see main), so the
    bench's own work never holds up the worker's requests."""
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
    lock = threading.Lock()

    def note(what: str) -> None:
        with lock:
            log.write(f"{time.time():.3f} {what}\n")

    listener = socket.create_server(("127.0.0.1", port))
    while True:
        client, _ = listener.accept()
        try:
            server = socket.create_connection(("127.0.0.1", upstream))
        except OSError:
            client.close()
            continue
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(client, server, Requests(note)), daemon=True).start()
        threading.Thread(target=pump, args=(server, client, None), daemon=True).start()


def pump(src: socket.socket, dst: socket.socket, reader: Requests | None) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)  # passed on first, read after
            if reader is not None:
                reader.feed(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Requests:
    """The client's side of one connection: HTTP/1.1 requests (bodies by Content-Length, as
    Prefect's client sends them), then, after an upgrade to a websocket, its messages (masked
    frames, permessage-deflate when negotiated)."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note
        self.buf = bytearray()
        self.body = 0  # request body bytes still to skip
        self.websocket = False
        self.message = bytearray()
        self.compressed = False
        self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        self.buf += data
        try:
            while self.buf and self._next():
                pass
        except Exception as exc:  # noqa: BLE001 - stop counting this connection, say so
            self.broken = True
            self.note(f"UNREADABLE {exc!r}")

    def _next(self) -> bool:
        """Consume one request head, body part or frame; False when more bytes are needed."""
        if self.body:
            n = min(self.body, len(self.buf))
            del self.buf[:n]
            self.body -= n
            return True
        if self.websocket:
            return self._frame()
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        line, *fields = self.buf[:end].decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        method, target, _ = line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
        self.note(f"{method} {IDS.sub('{id}', target.split('?', 1)[0])}")
        if "transfer-encoding" in headers:
            raise ValueError("a chunked request body")
        self.body = int(headers.get("content-length", 0))
        self.websocket = headers.get("upgrade", "").lower() == "websocket"
        return True

    def _frame(self) -> bool:
        b = self.buf
        if len(b) < 2:
            return False
        fin, rsv1, opcode = b[0] & 0x80, b[0] & 0x40, b[0] & 0x0F
        at, n = 2, b[1] & 0x7F
        if n >= 126:
            at = 4 if n == 126 else 10
            if len(b) < at:
                return False
            n = int.from_bytes(b[2:at], "big")
        key = bytes(b[at : at + 4]) if b[1] & 0x80 else b"\0\0\0\0"
        at += 4 if b[1] & 0x80 else 0
        if len(b) < at + n:
            return False
        mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(b[at : at + n], "big") ^ mask).to_bytes(n, "big")
        del b[: at + n]
        if opcode >= 8:  # close, ping, pong
            return True
        if opcode:  # the first frame of a message (0: a continuation)
            self.message, self.compressed = bytearray(), bool(rsv1)
        self.message += payload
        if fin:
            data = bytes(self.message)
            if self.compressed:
                data = self.inflate.decompress(data + b"\0\0\xff\xff")
            message = json.loads(data)
            if "event" in message:  # not the auth message, nor a subscription's filter
                self.note(f"EVENT {message['event']}")
        return True


def counted(log: Path, start: float, end: float) -> Counter[str]:
    """What the proxy logged from ``start`` to ``end`` (epoch seconds), by kind."""
    counts: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        stamp, what = line.split(" ", 1)
        if start <= float(stamp) <= end:
            counts[what] += 1
    return counts


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


def run_jobs(
    deployment: str, n: int, args: argparse.Namespace, storage: Path
) -> tuple[list[Job], float, float]:
    """Submit ``n`` jobs at once, wait for all, and read their timings; also when the first
    was submitted and when all were seen final (epoch seconds)."""
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
    first = time.time()
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
        last = time.time()
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
    return submitted, first, last


def report(label: str, jobs: list[Job], calls: Counter[str]) -> str:
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
    n = len(jobs)
    events = {k: v for k, v in calls.items() if k.startswith("EVENT ")}
    requests = {k: v for k, v in calls.items() if k not in events}
    summary = (
        f"jobs={n} wall_s={wall:.1f} engine_s={engine_s:.1f} "
        f"overhead_median_s={overhead:.2f} throughput_ratio={engine_s / wall:.2f} "
        f"api_calls_per_job={sum(requests.values()) / n:.1f} "
        f"events_per_job={sum(events.values()) / n:.1f}" + (f" failed={failed}" if failed else "")
    )
    print(f"\n{summary}\n\n| per job | Prefect API request or event |\n| ---: | --- |")
    for kind, count in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"| {count / n:.2f} | {kind} |")
    return summary


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
    # The workers' (and their flow runs') way to the server: through the counting proxy.
    proxy_port, calls_log = free_port(), tmp / "requests.log"
    proxy = multiprocessing.get_context("spawn").Process(
        target=count_proxy, args=(proxy_port, int(port), str(calls_log)), daemon=True
    )
    proxy.start()
    env = {
        **os.environ,
        "PREFECT_API_URL": f"http://127.0.0.1:{proxy_port}/api",
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
        jobs, first, last = run_jobs(DEPLOYMENT, args.jobs, args, tmp / "warm")
        warm = report("warm styledrop worker", jobs, counted(calls_log, first, last))
        stop(worker)
        if baseline_jobs:
            label = "Prefect's process worker (a process per run)"
            lines.append((label, baseline(args, baseline_jobs, env, tmp, procs, calls_log)))
        lines.append(("warm styledrop worker", warm))
    except BaseException:
        print(f"logs and data kept in {tmp}", file=sys.stderr)
        raise
    finally:
        for proc in reversed(procs):
            stop(proc)
        proxy.terminate()
    shutil.rmtree(tmp, ignore_errors=True)
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
    args: argparse.Namespace,
    n: int,
    env: dict[str, str],
    tmp: Path,
    procs: list[Any],
    calls_log: Path,
) -> str:
    """The same jobs on Prefect's process worker, a pool and deployment of its own."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    from flows.stylize import stylize

    pool = "bench-process"
    run_here = {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
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
            # Run from this checkout. (With `path=` instead, Prefect 3.8's process worker
            # copies the whole folder, .venv included, into a temporary one for every run.)
            pull_steps=[run_here],
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
    jobs, first, last = run_jobs(f"stylize/{pool}", n, args, tmp / "process")
    stop(worker)
    label = "Prefect's process worker (a process per run)"
    return report(label, jobs, counted(calls_log, first, last))


if __name__ == "__main__":
    sys.exit(main())
