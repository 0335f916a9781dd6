"""Inbox sensors end to end: a real Prefect server (conftest), the real `stylize/stylize`
deployment served by `styledrop serve` in a subprocess, `styledrop watch` (and `watch --s3`)
in a subprocess, real inotify, and a real S3 HTTP API on loopback (moto's server) for the
bucket inbox. Tiny images and options (random backbone, 40 px, 3 steps) keep each run to
seconds; the runs still go through every part: sensor -> Prefect -> flow -> engine -> storage.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import httpx
import pytest
from conftest import ROOT, PrefectServer, free_port, make_image, stop_process, wait_until
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TINY = {"size": 40, "iterations": 3, "min_size": 32}
# Generous limits for a loaded 2-core machine, where one run can take a minute or more from
# submission to result (a quiet one needs seconds); a passing test never waits for them.
OUTCOME_S = 300
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
    env = server.env()  # PREFECT_API_URL, PREFECT_RUNNER_POLL_FREQUENCY=1, ...
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
def served(prefect_api: PrefectServer, s3: S3, tmp_path_factory) -> Iterator[PrefectServer]:
    """`styledrop serve`: 4 runs at once, 2 GPU slots (CPU here), polling every second."""
    home = tmp_path_factory.mktemp("serve")
    log = ROOT / "test-artifacts" / "sensor-e2e-serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    proc = spawn(
        ["serve", "--limit", "4", "--gpu-slots", "2"], base_env(prefect_api, s3, home), log
    )
    try:
        wait_until(lambda: log_says(proc, log, "is being served"), 120, "`styledrop serve`", 0.5)
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
            **extra,
        )
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

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["stylize"])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["styledrop-inbox"])),
            limit=200,
        )
    return [r for r in runs if str(r.parameters.get("content", "")).startswith(content_prefix)]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return img.size


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# --- folder inbox ----------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_twenty_files_dropped_at_once_are_each_stylised_exactly_once(watch, tmp_path: Path) -> None:
    watch().start()
    names = [f"{style}/img{i:02d}.png" for i, style in enumerate(["mosaic", "waves"] * 10)]
    for i, name in enumerate(names):
        make_image(tmp_path / "inbox" / name, seed=i)
    archive, outputs = tmp_path / "archive", tmp_path / "outputs"

    def archived() -> bool:
        if (tmp_path / "failed").exists() and files(tmp_path / "failed"):
            raise AssertionError(f"failed: {files(tmp_path / 'failed')}")
        return len([f for f in files(archive) if f.endswith(".png")]) == 20

    wait_until(archived, 840, "20 originals in archive/", 1.0)
    assert sorted(f for f in files(archive) if f.endswith(".png")) == sorted(names)
    for name in names:
        assert png_size((outputs / name).read_bytes())[0] == TINY["size"]  # long edge
    runs = inbox_runs(str(tmp_path / "processing"))
    assert len(runs) == 20  # one run per file: no duplicates, none missing
    assert len({r.parameters["content"] for r in runs}) == 20
    assert {r.state.type.value for r in runs} == {"COMPLETED"}
    assert not [f for f in files(tmp_path / "processing") if not f.endswith("/")]


def test_a_slowly_written_file_is_taken_only_when_complete(watch, tmp_path: Path) -> None:
    watch().start()
    data = make_image(tmp_path / "src.png", size=(48, 40), seed=5).read_bytes()
    target = tmp_path / "inbox" / "waves" / "slow.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    step = len(data) // 4 + 1
    with open(target, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(0.8)  # the writer's pace: longer than settle_s (0.5)
            assert target.exists(), "taken while still being written"
            assert not (tmp_path / "processing" / "waves" / "slow.png").exists()
    wait_until((tmp_path / "archive" / "waves" / "slow.png").exists, OUTCOME_S, "slow.png archived")
    assert (tmp_path / "archive" / "waves" / "slow.png").read_bytes() == data  # whole file
    assert png_size((tmp_path / "outputs" / "waves" / "slow.png").read_bytes())[0] == TINY["size"]
    assert len(inbox_runs(str(tmp_path / "processing"))) == 1


def test_backlog_after_a_restart_with_a_corrupt_file_beside_good_ones(
    watch, tmp_path: Path
) -> None:
    """Files dropped while the sensor was down are taken when it starts again; a corrupt one
    among them ends in failed/ with the flow's reason while the good ones beside it succeed.
    (One test for both: the runs overlap, which keeps this module's time down.)"""
    sensor = watch().start()
    sensor.stop()
    inbox = tmp_path / "inbox"
    make_image(inbox / "first.png", seed=11)  # top level: the default style
    (inbox / "waves").mkdir()
    (inbox / "waves" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    make_image(inbox / "waves" / "good.png", seed=21)
    make_image(inbox / "waves" / "blend.png", seed=22)
    (inbox / "waves" / "blend.json").write_text(
        json.dumps({"styles": ["waves", "mosaic"], "blend": [0.7, 0.3], "seed": 3})
    )
    assert not (tmp_path / "processing").exists() or not files(tmp_path / "processing")
    sensor.start()

    note = tmp_path / "failed" / "waves" / "broken.jpg.error.txt"
    wait_until(note.exists, OUTCOME_S, "the corrupt file's error note")
    text = note.read_text()
    assert "broken.jpg" in text and "Flow run:" in text
    reason = text.split("Reason:", 1)[1].split("\n", 1)[0].strip()
    assert reason and "image" in reason.lower(), text  # the flow's words, not a stack trace
    assert (tmp_path / "failed" / "waves" / "broken.jpg").exists()
    for name in ("first.png", "waves/good.png", "waves/blend.png"):
        wait_until((tmp_path / "archive" / name).exists, OUTCOME_S, f"{name} archived")
        assert png_size((tmp_path / "outputs" / name).read_bytes())[0] == TINY["size"]
    assert (tmp_path / "archive" / "waves" / "blend.json").exists()  # the sidecar went along

    runs = {r.name: r for r in inbox_runs(str(tmp_path / "processing"))}
    assert sorted(runs) == sorted(
        f"inbox: {n}"
        for n in ("first.png", "waves/broken.jpg", "waves/good.png", "waves/blend.png")
    )  # one run each
    assert runs["inbox: first.png"].parameters["styles"] == ["mosaic"]
    assert runs["inbox: waves/good.png"].parameters["styles"] == ["waves"]
    blend = runs["inbox: waves/blend.png"].parameters
    assert blend["styles"] == ["waves", "mosaic"]
    assert blend["options"] == {**TINY, "style_blend": [0.7, 0.3], "seed": 3}


# --- S3 inbox --------------------------------------------------------------------------------


def test_s3_inbox_end_to_end_with_notifications_and_listing(watch, s3: S3, tmp_path: Path) -> None:
    from flows import storage

    fs, _ = storage.filesystem(f"s3://{BUCKET}", s3.settings)
    root = f"{BUCKET}/{PREFIX}"
    port = free_port()
    sensor = watch(
        "--s3",
        STYLEDROP_S3_BUCKET=BUCKET,
        STYLEDROP_S3_PREFIX=PREFIX,
        STYLEDROP_S3_WEBHOOK_PORT=str(port),
        STYLEDROP_SENSOR_RESCAN_S="1",
    )
    sensor.start()
    hook = f"http://127.0.0.1:{port}/"

    def notify(key: str) -> int:
        record = {
            "eventName": "ObjectCreated:Put",
            "s3": {
                "bucket": {"name": BUCKET},
                "object": {"key": quote_plus(key), "size": 1, "eTag": "x"},
            },
        }
        r = httpx.post(hook, json={"Records": [record]}, timeout=5)
        r.raise_for_status()
        return r.json()["accepted"]

    def image(seed: int) -> bytes:
        return make_image(tmp_path / f"src{seed}.png", seed=seed).read_bytes()

    # Notified and also listed (rescan every second): must make one run, not two.
    fs.pipe_file(f"{root}inbox/waves/my photo.png", image(31))
    assert notify(f"{PREFIX}inbox/waves/my photo.png") == 1
    fs.pipe_file(f"{root}inbox/listed.png", image(32))
    fs.pipe_file(f"{root}inbox/bad.jpg", b"not an image at all")
    # Ignored by the convention or not ours: accepted as 0.
    assert notify("elsewhere/inbox/x.png") == 0

    wait_until(
        lambda: fs.exists(f"{root}archive/waves/my photo.png"), OUTCOME_S, "notified archived"
    )
    wait_until(lambda: fs.exists(f"{root}archive/listed.png"), OUTCOME_S, "listed archived")
    wait_until(lambda: fs.exists(f"{root}failed/bad.jpg.error.txt"), OUTCOME_S, "bad failed")
    assert png_size(fs.cat_file(f"{root}outputs/waves/my photo.png"))[0] == TINY["size"]
    assert png_size(fs.cat_file(f"{root}outputs/listed.png"))[0] == TINY["size"]
    assert "bad.jpg" in fs.cat_file(f"{root}failed/bad.jpg.error.txt").decode()
    assert fs.exists(f"{root}failed/bad.jpg")

    # A late duplicate notification for a file already done: nothing left in inbox/ to take.
    assert notify(f"{PREFIX}inbox/waves/my photo.png") == 1
    # A later file is a barrier: once it is done, the duplicate was handled before it. Its
    # sidecar is broken, so it fails in the sensor at once, without a run to wait for.
    fs.pipe_file(f"{root}inbox/after.json", b"{broken")
    fs.pipe_file(f"{root}inbox/after.png", image(33))
    assert notify(f"{PREFIX}inbox/after.png") == 1
    wait_until(lambda: fs.exists(f"{root}failed/after.png.error.txt"), OUTCOME_S, "barrier")

    runs = inbox_runs(f"s3://{BUCKET}/{PREFIX}processing/")
    contents = sorted(r.parameters["content"] for r in runs)
    assert contents == sorted(
        f"s3://{BUCKET}/{PREFIX}processing/{k}"
        for k in ("waves/my photo.png", "listed.png", "bad.jpg")
    )  # one run each: the notified + listed object too
    # The sensor moves a file's bookkeeping (.run.json) out of processing/ last, after the
    # error note, so that an interrupted finish resumes: wait for it rather than race it.
    wait_until(
        lambda: not [k for k in fs.find(f"{root}processing") if not k.endswith("/")],
        OUTCOME_S,
        "processing/ to be empty",
    )
    assert not [k for k in fs.find(f"{root}inbox") if not k.endswith("/")]
