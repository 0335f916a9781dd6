"""Shared fixtures: tiny images, condition waits, and a real Prefect server for the tests that
need one (started once per session, only when a test asks for it).

Every fixture a test module uses but does not define comes from here or from the plugins
``sensor_stack`` (the inbox end-to-end stack) and ``browser`` (headless Chromium) registered
below: test modules import helper
functions and constants (``from conftest import ...``), never fixtures."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The inbox end-to-end stack's fixtures (s3, served, watch); as a plugin its asserts are
# rewritten too (assert_each_once shows its values when it fails).
pytest_plugins = ["sensor_stack", "browser"]

# Before anything imports Prefect or Streamlit: no telemetry, and tests never touch weights
# downloads (the random backbone) or a GPU.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
os.environ.setdefault("STYLEDROP_BACKBONE", "random")
os.environ.setdefault("STYLEDROP_DEVICE", "cpu")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2
) -> object:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last error
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_exc!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unserved_deployment(name: str) -> str:
    """Register the deployment ``flow/deployment`` that no worker serves: its runs stay queued,
    for tests of what submits them."""
    from prefect import get_client

    flow_name, deployment_name = name.split("/")
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow_name)
        client.create_deployment(flow_id=flow_id, name=deployment_name)
    return name


def make_image(
    path: Path, size: tuple[int, int] = (48, 40), seed: int = 0, mode: str = "RGB"
) -> Path:
    """A small image with structure (gradients + blocks) so content/style losses mean something."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack(
        [
            (x * 255 // max(w - 1, 1)),
            (y * 255 // max(h - 1, 1)),
            ((x // 8 + y // 8) % 2) * 200 + rng.integers(0, 55, (h, w)),
        ],
        axis=-1,
    ).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, "RGB").convert(mode).save(path)
    return path


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """Per-test output folder kept after the run (screenshots, logs) under test-artifacts/."""
    d = ARTIFACTS / request.node.name.replace("/", "_").replace("[", "_").replace("]", "")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for the module. Tiny images run as fast on one thread, and one thread
    does not stall at every op's barrier when other processes hold the shared cores (measured:
    7 min with two threads, 45 s with one, both at a load average of 5-9 on the 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP API (moto's server, in memory) on loopback for the whole session.

    moto keeps one in-memory S3 per process, so buckets made by one module are there for the
    next: create them with exist_ok. The region goes in AWS_DEFAULT_REGION because s3fs
    ignores one given in client_kwargs."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    old_region = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        if old_region is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = old_region


@pytest.fixture(scope="module")
def s3_settings(s3_endpoint: str):
    """Settings (flows.settings.Settings) for the session's S3 server, with the bucket
    ``styledrop-test``."""
    from flows import storage
    from flows.settings import Settings

    settings = Settings(s3_endpoint_url=s3_endpoint, s3_key="testing", s3_secret="testing")
    fs, _ = storage.filesystem("s3://styledrop-test", settings)
    fs.makedirs("styledrop-test", exist_ok=True)
    return settings


class PrefectServer:
    def __init__(self, url: str, home: Path, proc: subprocess.Popen, log: Path) -> None:
        self.api_url = url
        self.home = home
        self.proc = proc
        self.log = log

    def env(self) -> dict[str, str]:
        """Environment for a child process that should talk to this server."""
        env = dict(os.environ)
        env["PREFECT_API_URL"] = self.api_url
        env["PREFECT_HOME"] = str(self.home)
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"
        env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
        return env


def start_prefect_server(
    home: Path,
    database_url: str | None = None,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> PrefectServer:
    """A real `prefect server start` on `port` (by default a free loopback port): on SQLite in
    ``home``, or on the database at ``database_url`` (PostgreSQL: see
    ``postgres_prefect_server``), with ``extra_env`` (e.g. PREFECT_SERVER_API_AUTH_STRING).
    The same home and port again: the same server restarted (its log is appended to)."""
    import httpx

    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false")
    env.update(extra_env or {})  # the UI too, for one
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    log = home / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited: {log.read_text()[-2000:]}")
        return httpx.get(f"{url}/health", timeout=2).status_code == 200

    wait_until(healthy, 120, "the Prefect server to answer /api/health", interval=0.5)
    return PrefectServer(url, home, proc, log)


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real Prefect server for the whole session; this process's client points at it."""
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    old = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_HOME"] = str(server.home)
    try:
        yield server
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_process(server.proc)


@pytest.fixture(scope="module")
def postgres_prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server on a PostgreSQL of its own, as docs/scale-out.md runs it for many
    machines (tests/postgres.py: Debian's postgresql in a temporary folder)."""
    from postgres import postgres_cluster

    with postgres_cluster() as pg:
        server = start_prefect_server(tmp_path_factory.mktemp("prefect-pg"), pg.url)
        try:
            yield server
        finally:
            stop_process(server.proc)


@pytest.fixture(scope="session")
def prefect_api(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """`prefect_server`, and this process's Prefect client pointed at it.

    Prefect reads its settings once, when it is first imported (here: while test modules are
    collected, before any fixture sets PREFECT_API_URL); without this refresh an in-process
    flow run or `get_client()` talks to a temporary server of its own instead.
    """
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    try:
        yield prefect_server
    finally:
        drain_prefect_workers()
        refresh_global_settings_context()


@pytest.fixture
def client(prefect_api: PrefectServer) -> Iterator:
    """A sync Prefect client (prefect.client.orchestration.SyncPrefectClient) on the session's
    server."""
    from prefect import get_client

    with get_client(sync_client=True) as c:
        yield c


def drain_prefect_workers() -> None:
    """Send the logs and events Prefect still buffers while the server is up: otherwise they
    are retried against a stopped server when the interpreter exits (a minute or more)."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:  # as prefect.testing.utilities.prefect_test_harness does
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:  # never started
            pass
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


def job_record_json(job_id: str, status: str, **fields: object) -> bytes:
    """A job record as the flow writes it (flows.jobs.JobRecord), for tests of its readers."""
    from flows.jobs import JobRecord

    record = {
        "job_id": job_id,
        "status": status,
        "inputs": {
            "content": "/in/photo.png",
            "content_sha256": "c" * 64,
            "content_size": (80, 60),
            "styles": [{"requested": "mosaic", "source": "/styles/mosaic.png", "sha256": "a"}],
        },
        "params": {"size": 80},
        "timings": {"started_at": "2026-01-02T03:04:00+00:00"},
        **fields,
    }
    return JobRecord.model_validate(record).to_json()


def configure(mp: pytest.MonkeyPatch, root: Path, **extra: str):
    """Settings for a test's flow runs in this process: its own storage, quick previews and
    progress (returns flows.settings.Settings)."""
    from flows.settings import get_settings

    env = {
        "STYLEDROP_STORAGE": str(root / "out"),
        "STYLEDROP_DATA_DIR": str(root),  # its .styledrop/ holds the link secret
        "STYLEDROP_PREVIEW_EVERY": "3",
        "STYLEDROP_PROGRESS_INTERVAL_S": "0.3",
        "STYLEDROP_CANCEL_POLL_S": "0.5",
        "STYLEDROP_HEARTBEAT_S": "1",
        "STYLEDROP_HOST": "files.test",
        "STYLEDROP_DASHBOARD_PORT": "8599",
        **extra,
    }
    for key, value in env.items():
        mp.setenv(key, value)
    get_settings.cache_clear()
    return get_settings()


def artifacts_of(client, flow_run_id) -> dict[str, list]:
    """A flow run's Prefect artifacts by type."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found: dict[str, list] = {}
    for a in client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    ):
        found.setdefault(a.type, []).append(a)
    return found


def task_runs_of(client, flow_run_id) -> dict[str, list]:
    """A flow run's task runs by task name."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs: dict[str, list] = {}
    for tr in client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    ):
        # task run names are "<task name>-<3 hex chars>"
        runs.setdefault(tr.name.rsplit("-", 1)[0], []).append(tr)
    return runs
