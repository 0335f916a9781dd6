"""The image (Containerfile) and the compose stack (deployments/compose.yaml), built and run for
real with podman and podman-compose (issue 18): a photo dropped into the mounted inbox comes
out stylised on the host, the Prefect API and the dashboard answer, a worker container stopped
with SIGTERM mid-job hands its job back and a restarted one finishes it with one result, and
the stack survives `down` and `up`.

No container registry can be reached here, so the images are built from local parts: a
Debian base made with mmdebstrap (cached in CACHE, rebuilt only when missing) passed as the
Containerfile's BASE_IMAGE, and a stand-in for the public PostgreSQL image built on it from
Debian's postgresql (tests/container/), named through the compose file's POSTGRES_IMAGE.

Everything specific to this machine lives here, never in the files users run: podman's
settings (runc, as crun fails on this host's cgroups; cgroupfs; ulimits under this process's
hard limits; CNI with the dnsname plugin for names between containers, as netavark's
containers could not reach the network here) in a containers.conf of the test's own
(CONTAINERS_CONF), and this machine's extra CA certificates (HTTPS to the package index goes
through a proxy with its own CA) plus a pip.conf naming them, baked into the test's base.

The image is the default one (PyPI's CUDA torch, as GPU hosts get it: only PyPI and Debian
can be reached here); the jobs use the random backbone and tiny sizes on the CPU.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port, make_image, wait_until

from flows.api_auth import auth_headers

TOOLS = ("podman", "podman-compose", "mmdebstrap")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.long,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS),
        reason="needs root and podman, podman-compose, mmdebstrap (./install.sh --test)",
    ),
]

# Outside the repository, kept between runs: the Debian base tarball and podman's settings.
CACHE = Path(os.environ.get("STYLEDROP_TEST_CACHE", "/var/tmp/styledrop-test-cache"))
# Bump when the base's recipe below changes, so the cached tarball is made again.
BASE_TAR = CACHE / "debian-bookworm-base-v1.tar"
BASE = "localhost/styledrop-test-base:bookworm-v1"
IMAGE = "localhost/styledrop-test:latest"
POSTGRES = "localhost/styledrop-test-postgres:latest"
LABEL = "io.styledrop.test=1"  # on what the test builds, to tell its images from others'
CA_DIR = Path("/usr/local/share/ca-certificates")
TEST_UID = 4242  # not the image's user: the stack runs as whoever owns the data folder

SHORT = {"size": 48, "iterations": 12}
# Long enough to be caught running with a checkpoint (tens of seconds on this CPU).
LONG = {"size": 48, "iterations": 1000, "seed": 7}


def podman_conf() -> str:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n'
        "[engine]\n"
        'runtime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        "[network]\n"
        'network_backend = "cni"\n'
    )


def run(*argv: str, timeout: float = 600, check: bool = True) -> str:
    """A podman (or other) command in the test's podman set-up; its stdout."""
    proc = subprocess.run(
        argv, env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc.stdout


ENV = dict(os.environ)


@pytest.fixture(scope="module")
def podman() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    conf.write_text(podman_conf())
    ENV["CONTAINERS_CONF"] = str(conf)


def make_base() -> None:
    """The Debian base: python3 + venv, and this machine's CA certificates for pip."""
    if not BASE_TAR.exists():
        certs = sorted(str(p) for p in CA_DIR.glob("*.crt"))
        hooks = []
        if certs:
            hooks = [
                f'--customize-hook=mkdir -p "$1{CA_DIR}"',
                f"--customize-hook=copy-in {' '.join(certs)} {CA_DIR}/",
                '--customize-hook=chroot "$1" update-ca-certificates >/dev/null',
                '--customize-hook=printf "[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n"'
                ' > "$1/etc/pip.conf"',
            ]
        tmp = BASE_TAR.with_name(f".{BASE_TAR.stem}.{os.getpid()}.tar")
        run(
            "mmdebstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            *hooks,
            "bookworm",
            str(tmp),
            timeout=900,
        )
        tmp.rename(BASE_TAR)
        run("podman", "rmi", "--force", BASE, check=False)
    if not image_exists(BASE):
        run("podman", "import", str(BASE_TAR), BASE)


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], env=ENV).returncode == 0


def image_id(name: str) -> str | None:
    found = run("podman", "image", "inspect", "--format", "{{.Id}}", name, check=False)
    return found.strip() or None


def build(tag: str, containerfile: Path, context: Path) -> float:
    """Build ``tag``; the image it replaces is removed, the intermediate ones stay: they are
    podman's layer cache for the next run (`podman image prune` clears them)."""
    before = image_id(tag)
    started = time.monotonic()
    run(
        "podman",
        "build",
        "--format",
        "docker",  # OCI images drop the HEALTHCHECK
        "--label",
        LABEL,
        "--build-arg",
        f"BASE_IMAGE={BASE}",
        "-t",
        tag,
        "-f",
        str(containerfile),
        str(context),
        timeout=1800,
    )
    took = time.monotonic() - started
    if before and before != image_id(tag):
        run("podman", "rmi", before, check=False)
    return took


@pytest.fixture(scope="module")
def images(podman: None) -> dict[str, float]:
    """Both images built (podman's layer cache makes a rebuild of unchanged layers quick)."""
    make_base()
    took = {
        "styledrop": build(IMAGE, ROOT / "Containerfile", ROOT),
        "postgres": build(
            POSTGRES, ROOT / "tests/container/postgres.Containerfile", ROOT / "tests/container"
        ),
    }
    size = int(run("podman", "image", "inspect", "--format", "{{.Size}}", IMAGE).strip())
    print(
        f"\nbuild: styledrop {took['styledrop']:.0f} s, postgres stand-in "
        f"{took['postgres']:.0f} s; styledrop image {size / 1e9:.2f} GB"
    )
    return took


@dataclass
class Stack:
    folder: Path
    project: str
    auth: str
    prefect_port: int
    dashboard_port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def compose(self, *args: str, timeout: float = 600) -> str:
        return run(
            "podman-compose",
            "-p",
            self.project,
            "-f",
            str(self.folder / "compose.yaml"),
            *args,
            timeout=timeout,
        )

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def headers(self) -> dict[str, str]:
        return auth_headers(self.auth)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.api}{path}", headers=self.headers(), timeout=10)

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(f"{self.api}{path}", json=body, headers=self.headers(), timeout=10)

    def flow_run(self, run_id: str) -> dict:
        answer = self.get(f"/flow_runs/{run_id}")
        answer.raise_for_status()
        return answer.json()

    def down(self, *args: str, timeout: float = 300) -> None:
        """`down`, and what podman-compose 1.0 leaves: the network, and the anonymous volumes
        the image's VOLUME gives containers that mount nothing at /data (the server)."""
        ids = run(
            "podman", "ps", "-aq", "--filter", f"label=io.podman.compose.project={self.project}"
        ).split()
        anonymous = []
        for container in ids:
            mounts = json.loads(run("podman", "inspect", "--format", "{{json .Mounts}}", container))
            names = [m.get("Name", "") for m in mounts]
            anonymous += [n for n in names if re.fullmatch(r"[0-9a-f]{64}", n)]
        self.compose("down", *args, timeout=timeout)
        run("podman", "network", "rm", "--force", f"{self.project}_default", check=False)
        for volume in anonymous:
            run("podman", "volume", "rm", "--force", volume, check=False)

    def up(self) -> None:
        self.compose("up", "-d")
        wait_until(self.ready, 300, "the stack's worker to be ONLINE and the dashboard up", 2)

    def ready(self) -> bool:
        workers = self.post("/work_pools/styledrop-gpu/workers/filter", {})
        dashboard = httpx.get(f"http://127.0.0.1:{self.dashboard_port}/_stcore/health")
        return (
            workers.status_code == 200
            and any(w["status"] == "ONLINE" for w in workers.json())
            and dashboard.status_code == 200
        )

    def logs(self) -> str:
        out = []
        for service in ("worker", "watch", "dashboard", "prefect-server"):
            logs = run("podman", "logs", "--tail", "40", self.container(service), check=False)
            out.append(f"--- {service}\n{logs}")
        return "\n".join(out)

    def drop(self, name: str, seed: int, options: dict) -> Path:
        inbox = self.data / "inbox"
        (inbox / f"{Path(name).stem}.json").write_text(json.dumps(options))
        return make_image(inbox / name, size=(48, 40), seed=seed)

    def take(self, name: str) -> dict:
        """The sensor's bookkeeping of a dropped file while it is in processing/."""
        return json.loads((self.data / "processing" / f"{name}.run.json").read_text())


@pytest.fixture(scope="module")
def stack(images: dict[str, float], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("compose")
    shutil.copy(ROOT / "deployments/compose.yaml", folder / "compose.yaml")
    s = Stack(
        folder=folder,
        project=f"sdtest{uuid.uuid4().hex[:8]}",
        auth=f"styledrop:{uuid.uuid4().hex}",
        prefect_port=free_port(),
        dashboard_port=free_port(),
    )
    (folder / ".env").write_text(
        "\n".join(
            [
                f"POSTGRES_PASSWORD={uuid.uuid4().hex}",
                f"PREFECT_API_AUTH_STRING={s.auth}",
                f"STYLEDROP_IMAGE={IMAGE}",
                f"POSTGRES_IMAGE={POSTGRES}",
                f"STYLEDROP_UID={TEST_UID}",
                f"STYLEDROP_GID={TEST_UID}",
                f"PREFECT_PORT={s.prefect_port}",
                f"DASHBOARD_PORT={s.dashboard_port}",
                "",
            ]
        )
    )
    (folder / "styledrop.env").write_text(
        "\n".join(
            [
                "STYLEDROP_BACKBONE=random",
                "STYLEDROP_DEVICE=cpu",
                f"STYLEDROP_SENSOR_OPTIONS={json.dumps(SHORT)}",
                # A stopped worker hands its job back almost at once.
                "STYLEDROP_WORKER_GRACE_S=2",
                "STYLEDROP_CHECKPOINT_INTERVAL_S=2",
                "PREFECT_WORKER_QUERY_SECONDS=1",
                "",
            ]
        )
    )
    (s.data / "inbox").mkdir(parents=True)
    for path in (s.data, s.data / "inbox"):
        os.chown(path, TEST_UID, TEST_UID)
    started = time.monotonic()
    try:
        s.up()
        print(f"\nstack up in {time.monotonic() - started:.0f} s")
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.down("-v", "-t", "5")
        shutil.rmtree(s.data, ignore_errors=True)


def test_the_image_runs_as_a_user_with_styledrop_and_no_build_tools(images: dict) -> None:
    image = json.loads(run("podman", "image", "inspect", IMAGE))[0]
    config = image["Config"]
    assert config["User"] == "styledrop"
    assert config["Entrypoint"] == ["styledrop"]
    assert image["Healthcheck"]["Test"] == ["CMD", "styledrop", "health"]
    assert "/data" in config["Volumes"]
    assert "DO_NOT_TRACK=1" in config["Env"]
    probe = (
        "id -u; styledrop --version; "
        "for tool in gcc cc g++ make git; do command -v $tool; done; "
        "python -c 'import pytest' 2>/dev/null && echo pytest; "
        "ls /root/.cache /home/styledrop/.cache 2>/dev/null; exit 0"
    )
    out = run("podman", "run", "--rm", "--entrypoint", "sh", IMAGE, "-c", probe).split()
    assert out[:3] == ["10001", "styledrop", "0.1.0"], out  # no compiler, pytest or cache


def test_a_photo_dropped_into_the_inbox_comes_out_stylised_on_the_host(stack: Stack) -> None:
    stack.drop("harbour.jpg", 1, {})
    result = stack.data / "outputs" / "harbour.png"
    wait_until(result.exists, 300, "outputs/harbour.png on the host", 1)
    record = json.loads(result.with_name("harbour.png.json").read_text())
    assert record["status"] == "completed" and record["backbone"].startswith("random"), record
    wait_until((stack.data / "archive" / "harbour.jpg").exists, 60, "archive/harbour.jpg", 0.5)
    assert result.stat().st_uid == TEST_UID  # the data folder's owner, not the image's user


def test_the_prefect_api_asks_for_its_auth_string_and_the_dashboard_serves(stack: Stack) -> None:
    assert httpx.get(f"{stack.api}/health", timeout=10).status_code == 200
    assert httpx.post(f"{stack.api}/flow_runs/filter", json={}, timeout=10).status_code == 401
    assert stack.post("/flow_runs/filter", {}).status_code == 200
    page = httpx.get(f"http://127.0.0.1:{stack.dashboard_port}/", timeout=10)
    assert page.status_code == 200 and "<title>" in page.text.lower(), page.text[:300]
    for service in ("worker", "watch", "dashboard"):
        check = subprocess.run(
            ["podman", "healthcheck", "run", stack.container(service)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, (service, check.stdout, check.stderr)


def test_a_worker_stopped_with_sigterm_hands_its_job_back(stack: Stack) -> None:
    stack.drop("long.jpg", 2, LONG)
    run_id = wait_until(lambda: stack.take("long.jpg").get("flow_run_id"), 120, "the long run")
    link = stack.data / "outputs" / "_runs" / f"{run_id}.json"

    def checkpointed() -> bool:
        job = json.loads(link.read_text())["job_id"]
        return (stack.data / "outputs" / "_jobs" / job / "checkpoint.pt").exists()

    wait_until(
        lambda: stack.flow_run(run_id)["state_type"] == "RUNNING" and checkpointed(),
        180,
        "the long job to run and write a checkpoint",
        0.5,
    )
    worker = stack.container("worker")
    stopped_at = time.monotonic()
    run("podman", "stop", "--time", "120", worker, timeout=180)
    took = time.monotonic() - stopped_at
    code = run("podman", "inspect", "--format", "{{.State.ExitCode}}", worker).strip()
    assert code == "0", stack.logs()
    state = stack.flow_run(run_id)["state"]
    assert state["name"] == "AwaitingRetry", state
    assert "worker was stopped" in (state["message"] or ""), state
    assert took < 60, took  # handed back by the worker, not killed after the timeout

    run("podman", "start", worker)
    wait_until(
        lambda: stack.flow_run(run_id)["state_type"] in ("COMPLETED", "FAILED", "CRASHED"),
        300,
        "the handed-back job to finish on the restarted worker",
        1,
    )
    assert stack.flow_run(run_id)["state_type"] == "COMPLETED", stack.logs()
    results = sorted(p.name for p in (stack.data / "outputs").glob("long*.png"))
    assert results == ["long.png"], results
    record = json.loads((stack.data / "outputs" / "long.png.json").read_text())
    assert record["status"] == "completed" and record["resumed_from_step"] > 0, record


def test_the_stack_survives_down_and_up(stack: Stack) -> None:
    before = {r["id"] for r in stack.post("/flow_runs/filter", {}).json()}
    assert before
    stack.down("-t", "60", timeout=400)
    stack.up()
    after = {r["id"] for r in stack.post("/flow_runs/filter", {}).json()}
    assert before <= after  # the runs live on in the database's named volume
    stack.drop("again.jpg", 3, {})
    wait_until((stack.data / "outputs" / "again.png").exists, 300, "outputs/again.png", 1)
