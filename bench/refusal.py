"""How fast a bad file is refused while the worker is busy: the inbox sensor's check against
the flow's own check waiting in the queue.

    .venv/bin/python bench/refusal.py                          # 2 busy jobs, 128 px, 400 steps
    .venv/bin/python bench/refusal.py --busy-jobs 1 --busy-size 32 --busy-iterations 5 \
        --settle-s 0.2                                         # the smallest (the smoke test)

Starts a Prefect server (SQLite, a temporary home, a loopback port), the warm `styledrop worker`
(random backbone, ``--limit 1``: one job at a time, as on one GPU) and the folder sensor
(`styledrop watch`, its default settle time unless ``--settle-s``) on a temporary data
folder. It submits ``--busy-jobs`` long jobs to `stylize/stylize` (``--busy-size`` px,
``--busy-iterations`` steps, each its own seed) and waits until the first runs, then:

1. sensor: drops the hostile files into ``inbox/`` one after the other as a copy writes them
   (a sidecar before its photo) and times each from its drop (the file's open) to the
   ``failed/<name>.error.txt`` note the sensor writes (the note's modification time). The
   sensor runs the flow's checks (flows/checks.py) before it submits, so none gets a run: the
   bench counts the runs with the ``inbox`` tag and reports ``sensor_runs`` (0 expected).
   The empty file is taken only after 30 settle times without change (flows/sensors/
   settle.py: a writer may create a file first and fill it later), 30 s by default.
2. baseline, while the same jobs are still ahead in the queue: the same files submitted
   straight to `stylize/stylize` as runs, as an API user would (no sensor, no check before
   the run), timed from the submission to the run's Failed state - the flow's own refusal,
   which waits behind the queue. A file in an unknown-style folder is ``styles`` naming that
   style; a sidecar's options are ``options``, and the broken sidecar's text (not JSON) is
   passed as ``options`` as it is, as a client that forwards it unparsed would. A submission
   the server refuses itself (the deployment's parameter schema) is timed to that refusal.

The hostile files: a text file named .jpg, an empty .jpg, a 10x10 image, a truncated JPEG, a
photo in an unknown-style folder, a photo with a sidecar that is not JSON and one with a bad
option (``{"size": 4}``). It prints a table (seconds per file, the first words of each
refusal) and a summary, also its last line:
``files=<n> sensor_median_s=<x> sensor_max_s=<x> baseline_median_s=<y> baseline_max_s=<y>
ratio=<median baseline / median sensor> sensor_runs=<runs the sensor made> busy_ahead=<jobs
not done at the drop> busy_ahead_baseline=<the same at the submissions>``.

The data folder and the server's home are removed at the end (``--keep`` keeps them and says
where); every process it starts is stopped. Telemetry is off in all of them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
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

from bench.service import free_port, start, stop, wait_for  # noqa: E402 - after the path set-up
from flows.deployment import DEPLOYMENT  # noqa: E402

PHOTO = ROOT / "samples" / "landscape.jpg"
UNKNOWN_STYLE = "no-such-style"


@dataclass
class Hostile:
    """One bad file: its place in the inbox, its bytes, its sidecar's bytes (if any)."""

    rel: str
    what: str
    data: bytes
    sidecar: bytes | None = None
    sensor_s: float | None = None
    note: str = ""
    baseline_s: float | None = None
    baseline_outcome: str = ""

    def api_parameters(self, content: Path) -> dict[str, Any]:
        """What an API user sends for this file: no sensor reads the folder or the sidecar."""
        parameters: dict[str, Any] = {"content": str(content)}
        if "/" in self.rel:
            parameters["styles"] = [self.rel.split("/", 1)[0]]
        if self.sidecar is not None:
            try:
                parameters["options"] = json.loads(self.sidecar)
            except ValueError:
                parameters["options"] = self.sidecar.decode()  # forwarded unparsed
        return parameters


def hostile_files() -> list[Hostile]:
    from PIL import Image

    photo = PHOTO.read_bytes()
    tiny = io.BytesIO()
    Image.new("RGB", (10, 10), (200, 40, 40)).save(tiny, "JPEG")
    return [
        Hostile("not-an-image.jpg", "a text file named .jpg", b"holiday notes, not a picture\n"),
        Hostile("empty.jpg", "an empty .jpg", b""),
        Hostile("tiny.jpg", "a 10x10 image", tiny.getvalue()),
        Hostile("truncated.jpg", "a truncated JPEG", photo[: len(photo) // 2]),
        Hostile(f"{UNKNOWN_STYLE}/photo.jpg", "a photo in an unknown-style folder", photo),
        Hostile("broken-sidecar.jpg", "a photo, sidecar not JSON", photo, b"size: 512\n"),
        Hostile("bad-option.jpg", 'a photo, sidecar {"size": 4}', photo, b'{"size": 4}'),
    ]


def sidecar_rel(rel: str) -> str:
    return rel.rsplit(".", 1)[0] + ".json"


def drop(data: bytes, target: Path) -> float:
    """Write a file into the inbox as a copy does (open, write, close): the moment of the
    drop (epoch seconds)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    dropped = time.time()
    target.write_bytes(data)
    return dropped


def epoch(stamp: datetime) -> float:
    return stamp.timestamp()


def submit(parameters: dict[str, Any]) -> str:
    from prefect.deployments import run_deployment

    return str(run_deployment(DEPLOYMENT, parameters=parameters, timeout=0).id)


def read_runs(ids: list[str]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return {str(r.id): r for r in runs}


def not_final(ids: list[str]) -> int:
    return sum(not r.state.is_final() for r in read_runs(ids).values())


def inbox_runs() -> int:
    """Runs made by a sensor (it tags each with its source)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        tags = FlowRunFilter(tags=FlowRunFilterTags(any_=["inbox", "s3"]))
        return len(client.read_flow_runs(flow_run_filter=tags))


def busy_jobs(args: argparse.Namespace) -> list[str]:
    options = {"size": args.busy_size, "min_size": min(args.busy_size, 128)}
    return [
        submit({"content": str(PHOTO), "options": {**options, "iterations": args.busy_iterations,
                                                     "seed": 1000 + i}})
        for i in range(args.busy_jobs)
    ]  # fmt: skip


def sensor_phase(files: list[Hostile], data: Path, timeout: float) -> None:
    """Drop every file (a sidecar first), then wait for every note in failed/."""
    dropped = {}
    for f in files:
        if f.sidecar is not None:
            drop(f.sidecar, data / "inbox" / sidecar_rel(f.rel))
        dropped[f.rel] = drop(f.data, data / "inbox" / f.rel)
    notes = {f.rel: data / "failed" / (f.rel + ".error.txt") for f in files}
    wait_for(lambda: all(p.exists() for p in notes.values()), timeout, "the sensor's notes")
    for f in files:
        f.sensor_s = notes[f.rel].stat().st_mtime - dropped[f.rel]
        note = notes[f.rel].read_text(errors="replace")
        f.note = note.split("Reason:", 1)[-1].split("\n", 1)[0].strip()


def baseline_phase(files: list[Hostile], folder: Path, timeout: float) -> None:
    """Submit every file as a run to the deployment, then wait for all to end."""
    from prefect.exceptions import PrefectHTTPStatusError

    folder.mkdir()
    submitted: dict[str, tuple[Hostile, float]] = {}
    for f in files:
        content = folder / f.rel.replace("/", "-")
        content.write_bytes(f.data)
        t = time.time()
        try:
            submitted[submit(f.api_parameters(content))] = (f, t)
        except PrefectHTTPStatusError as exc:  # refused by the server at submission
            f.baseline_s = time.time() - t
            try:
                detail = exc.response.json().get("detail", "")
            except ValueError:
                detail = exc.response.text
            detail = str(detail).removeprefix("Error creating flow run: ")
            f.baseline_outcome = f"refused at submission ({exc.response.status_code}): {detail}"
    ids = list(submitted)
    if not ids:
        return
    runs = wait_for(
        lambda: (r := read_runs(ids)) and all(x.state.is_final() for x in r.values()) and r,
        timeout,
        "the baseline runs to end",
    )
    for run_id, (f, t) in submitted.items():
        run = runs[run_id]
        f.baseline_s = epoch(run.end_time or run.state.timestamp) - t
        f.baseline_outcome = f"{run.state.name}: {run.state.message or ''}".strip()


def first_words(text: str, tmp: Path, n: int = 90) -> str:
    line = " ".join(text.replace(f"{tmp}/", "").split())  # paths from the data folder on
    return line if len(line) <= n else line[: n - 3] + "..."


def report(
    files: list[Hostile], sensor_runs: int, ahead: int, ahead_baseline: int, tmp: Path
) -> str:
    print("\n| file | what | sensor: drop to failed/ s | baseline: submit to Failed s | "
          "sensor's note | baseline run's end |")  # fmt: skip
    print("| --- | --- | ---: | ---: | --- | --- |")
    for f in files:
        base = "-" if f.baseline_s is None else f"{f.baseline_s:.2f}"
        print(
            f"| {f.rel} | {f.what} | {f.sensor_s:.2f} | {base} | {first_words(f.note, tmp)} | "
            f"{first_words(f.baseline_outcome, tmp)} |"
        )
    sensor = [f.sensor_s for f in files if f.sensor_s is not None]
    base = [f.baseline_s for f in files if f.baseline_s is not None]
    s_med, b_med = statistics.median(sensor), statistics.median(base) if base else 0.0
    return (
        f"files={len(files)} sensor_median_s={s_med:.2f} sensor_max_s={max(sensor):.2f} "
        f"baseline_median_s={b_med:.2f} baseline_max_s={max(base, default=0.0):.2f} "
        f"ratio={b_med / s_med:.1f} sensor_runs={sensor_runs} busy_ahead={ahead} "
        f"busy_ahead_baseline={ahead_baseline}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy-jobs", type=int, default=2, help="long jobs ahead in the queue")
    parser.add_argument("--busy-size", type=int, default=128, help="their long edge in pixels")
    parser.add_argument("--busy-iterations", type=int, default=400, help="their steps")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=None,
        help="the sensor's STYLEDROP_SETTLE_S (default: its own; an empty file waits 30 times it)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    args = parser.parse_args()
    if args.busy_jobs < 1:
        parser.error("--busy-jobs must be at least 1: the point is a busy worker")

    tmp = Path(tempfile.mkdtemp(prefix="styledrop-refusal-"))
    port = str(free_port())
    api = f"http://127.0.0.1:{port}/api"
    home, data = tmp / "prefect", tmp / "data"
    server_env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"}
    server_env.pop("PREFECT_API_URL", None)
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # as `styledrop up` runs it
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "STYLEDROP_DATA_DIR": str(data),
        "STYLEDROP_STYLES_DIR": str(ROOT / "styles"),
        "STYLEDROP_BACKBONE": "random",
        "STYLEDROP_DEVICE": "cpu",
    }
    for name in ("STYLEDROP_STORAGE", "STYLEDROP_SENSOR_OPTIONS", "STYLEDROP_SETTLE_S"):
        env.pop(name, None)  # the sensor and the worker as a user's `up` runs them
    if args.settle_s is not None:
        env["STYLEDROP_SETTLE_S"] = str(args.settle_s)
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))
    (data / "inbox").mkdir(parents=True)
    procs: list[subprocess.Popen[bytes]] = []
    logs = {name: tmp / f"{name}.log" for name in ("server", "worker", "watch")}
    try:
        import httpx

        procs.append(
            start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                   "--port", port], server_env, logs["server"])
        )  # fmt: skip
        wait_for(lambda: httpx.get(f"{api}/health").status_code == 200, 180, "the server", procs[0])
        load_start = os.getloadavg()
        cli = [sys.executable, "-m", "flows.cli"]
        worker_argv = [*cli, "worker", "--name", "bench", "--gpus", "none", "--limit", "1"]
        worker = start(worker_argv, env, logs["worker"])
        procs.append(worker)
        watch = start([*cli, "watch"], env, logs["watch"])  # starts while the worker warms up
        procs.append(watch)
        wait_for(lambda: "ready" in logs["worker"].read_text(), 300, "the warm worker", worker)
        wait_for(lambda: "watching" in logs["watch"].read_text(), 120, "the sensor", watch)

        busy = busy_jobs(args)
        wait_for(lambda: read_runs(busy[:1])[busy[0]].state.is_running(), 300, "the first busy job")
        files = hostile_files()
        ahead = not_final(busy)
        sensor_phase(files, data, timeout=300)
        sensor_runs = inbox_runs()
        ahead_baseline = not_final(busy)
        # The busy jobs bound the wait: up to 2 s a step (128 px) on a loaded CPU, and a margin.
        steps = args.busy_jobs * args.busy_iterations * max(1.0, (args.busy_size / 128) ** 2)
        baseline_phase(files, tmp / "api", timeout=600 + 2.0 * steps)
        summary = report(files, sensor_runs, ahead, ahead_baseline, tmp)
    except BaseException:
        for name, path in logs.items():
            if path.exists():
                print(f"--- {name} log (end) ---\n{path.read_text(errors='replace')[-3000:]}",
                      file=sys.stderr)  # fmt: skip
        raise
    finally:
        for proc in reversed(procs):
            stop(proc)
        if args.keep:
            print(f"logs and data kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load_end = os.getloadavg()
    print(
        f"\nmachine: {platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}, "
        f"load average (1, 5, 15 min) at start {fmt(load_start)}, at end {fmt(load_end)}; "
        f"busy jobs {args.busy_jobs} x {args.busy_size} px, {args.busy_iterations} steps, "
        f"random backbone, worker limit 1, sensor settle {args.settle_s or 'default'}"
    )
    print(summary)
    return 0


def fmt(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in load)


if __name__ == "__main__":
    sys.exit(main())
