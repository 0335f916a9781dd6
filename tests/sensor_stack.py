"""The stack the inbox end-to-end tests (test_sensor_e2e*.py, test_load*.py) run against: a real
Prefect server (conftest), the real `stylize/stylize` deployment run by the warm `styledrop
worker` in a subprocess, `styledrop watch` (and `watch --s3`) in a subprocess, real inotify, and
a real S3 HTTP API on loopback (moto's server) for the bucket inbox. Tiny images and options
(random backbone, 40 px, 3 steps) keep each run to seconds; the runs still go through every
part: sensor -> Prefect -> flow -> engine -> storage.

Fixtures are module-scoped: each test module that imports them gets its own `styledrop worker`,
so the modules can run in parallel (pytest-xdist, one file per process).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, PrefectServer, stop_process, wait_until
from PIL import Image

TINY = {"size": 40, "iterations": 3, "min_size": 32}
# Generous limits for a loaded 2-core machine, where one run can take a minute or more from
# submission to result (a quiet one needs seconds); a passing test never waits for them.
OUTCOME_S = 300
# Load tests (test_load*.py): 32 px, one step. The plumbing is what is under load.
LOAD = {"size": 32, "iterations": 1, "min_size": 32}
BUCKET = "styledrop-e2e"
PREFIX = "drop/"


@dataclass
class S3:
    endpoint: str
    settings: object  # flows.settings.Settings with the endpoint and keys


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> S3:
    """The session's S3 server (conftest) with one bucket."""
    from flows import storage
    from flows.settings import Settings

    settings = Settings(s3_endpoint_url=s3_endpoint, s3_key="testing", s3_secret="testing")
    fs, _ = storage.filesystem(f"s3://{BUCKET}", settings)
    fs.makedirs(BUCKET, exist_ok=True)
    return S3(s3_endpoint, settings)


def base_env(server: PrefectServer, s3: S3, data_dir: Path) -> dict[str, str]:
    env = server.env()  # PREFECT_API_URL, PREFECT_WORKER_QUERY_SECONDS=1, ...
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        STYLEDROP_DATA_DIR=str(data_dir),
        STYLEDROP_STYLES_DIR=str(ROOT / "styles"),
        STYLEDROP_BACKBONE="random",
        STYLEDROP_DEVICE="cpu",
        STYLEDROP_S3_ENDPOINT_URL=s3.endpoint,
        STYLEDROP_S3_KEY="testing",
        STYLEDROP_S3_SECRET="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def log_says(proc: subprocess.Popen, log: Path, text: str) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"{proc.args} exited ({proc.returncode}): {log.read_text()[-3000:]}")
    return text in log.read_text(errors="replace")


@pytest.fixture(scope="module")
def served(
    prefect_api: PrefectServer, s3: S3, tmp_path_factory, request: pytest.FixtureRequest
) -> Iterator[PrefectServer]:
    """`styledrop worker` on the CPU, polling every second: 2 runs at once, or the test
    module's ``WORKER_LIMIT``."""
    home = tmp_path_factory.mktemp("worker")
    log = ROOT / "test-artifacts" / f"{request.module.__name__}-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    proc = spawn(
        ["worker", "--gpus", "none", "--limit", str(getattr(request.module, "WORKER_LIMIT", 2))]
        + ["--name", request.module.__name__],
        base_env(prefect_api, s3, home),
        log,
    )
    try:
        wait_until(lambda: log_says(proc, log, "ready"), 180, "`styledrop worker`", 0.5)
        yield prefect_api
    finally:
        stop_process(proc)


class Watch:
    """`styledrop watch [--s3]` as a subprocess, stoppable and restartable."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Watch:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        mark = len(self.log.read_bytes()) if self.log.exists() else 0
        self.proc = spawn(["watch", *self.args], self.env, self.log)
        # Ready once the source is up ("watching ...") after this start's first log line.
        wait_until(
            lambda: (
                log_says(self.proc, self.log, "watching")
                and "watching" in self.log.read_bytes()[mark:].decode(errors="replace")
            ),
            60,
            "`styledrop watch` to start",
            0.3,
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            assert self.proc.returncode == 0, self.log.read_text()[-3000:]
            self.proc = None


@pytest.fixture
def watch(served: PrefectServer, s3: S3, tmp_path: Path, artifacts_dir: Path) -> Iterator:
    """Factory: a `styledrop watch` on this test's data dir with tiny job options."""
    started: list[Watch] = []

    def make(*args: str, **extra: str) -> Watch:
        env = base_env(served, s3, tmp_path)
        env.update(
            STYLEDROP_SETTLE_S="0.5",
            STYLEDROP_SENSOR_POLL_S="0.5",
            STYLEDROP_SENSOR_OPTIONS=json.dumps(TINY),
            STYLEDROP_DEFAULT_STYLE="mosaic",
        )
        env.update(extra)  # may replace the ones above (e.g. the job options)
        w = Watch(list(args), env, artifacts_dir / "watch.log")
        started.append(w)
        return w

    yield make
    for w in started:
        if w.proc is not None:
            stop_process(w.proc)


def inbox_runs(content_prefix: str) -> list:
    """Flow runs of stylize/stylize created by a sensor for files under `content_prefix`."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterTags,
    )

    runs: list = []
    with get_client(sync_client=True) as client:
        while True:  # in pages: the server answers at most 200 runs per query
            page = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["stylize"])),
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(any_=["inbox", "s3"])),
                limit=200,
                offset=len(runs),
            )
            runs += page
            if len(page) < 200:
                break
    return [r for r in runs if str(r.parameters.get("content", "")).startswith(content_prefix)]


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise AssertionError(f"no VmHWM for {pid}")


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return img.size


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def dropped_names(n: int) -> list[str]:
    """``n`` inbox names, half under mosaic/ and half under waves/."""
    return [f"{style}/img{i:03d}.png" for i, style in enumerate(["mosaic", "waves"] * (n // 2))]


def assert_each_once(
    expected: list[str], listing: Callable[[str], list[str]], content_prefix: str
) -> None:
    """Exactly one run and one result per file, every original archived, nothing left over.
    ``listing(folder)``: the files under that folder of the inbox root, relative to it;
    ``content_prefix``: the runs' ``content`` parameter before the file's name."""
    assert listing("failed") == []
    # Each original with its bookkeeping; each result with its summary: no "-1" second copies.
    assert listing("archive") == sorted(expected + [n + ".run.json" for n in expected])
    assert listing("outputs") == sorted(expected + [n + ".json" for n in expected])
    assert listing("inbox") == []
    assert listing("processing") == []
    runs: dict[str, list[str]] = {}  # content -> "STATE: message" of each of its runs
    for r in inbox_runs(content_prefix):
        runs.setdefault(r.parameters["content"], []).append(
            f"{r.state.type.value}: {r.state.message}"
        )
    assert sorted(runs) == sorted(content_prefix + n for n in expected)
    assert {k: v for k, v in runs.items() if len(v) != 1} == {}  # one run each
    assert {v[0].split(":")[0] for v in runs.values()} == {"COMPLETED"}
