"""`styledrop up` end to end: the real server, worker, watch and dashboard as processes, the
samples stylised through the inbox, the URLs answering, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port, wait_until

from flows.stack import descendants, pid_alive

pytestmark = pytest.mark.slow


def up_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "STYLEDROP_"))}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        STYLEDROP_DATA_DIR=str(data_dir),
        STYLEDROP_BACKBONE="random",
        STYLEDROP_DEVICE="cpu",
        # Every inbox job tiny: the samples are 384x288.
        STYLEDROP_SENSOR_OPTIONS=json.dumps({"size": 64, "iterations": 10}),
        STYLEDROP_PREFECT_PORT=str(free_port()),
        STYLEDROP_DASHBOARD_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_up(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "up", *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.timeout(420)
def test_up_stylises_the_samples_and_ctrl_c_stops_everything(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    data = tmp_path / "data"
    env = up_env(data)
    log = artifacts_dir / "up.log"
    started = time.monotonic()
    proc = start_up(env, log)
    try:
        # The sensor archives an original once its result is written.
        results = [data / "outputs" / "landscape.png", data / "outputs" / "city.png"]
        results += [data / "archive" / "landscape.jpg", data / "archive" / "city.jpg"]
        wait_until(
            lambda: (
                proc.poll() is None
                and all(p.exists() for p in results)
                or (proc.poll() is not None and pytest.fail(f"up exited:\n{log.read_text()}"))
            ),
            300,
            "both samples stylised (results in outputs/, originals in archive/)",
            0.5,
        )
        samples_done = time.monotonic() - started
        status = json.loads((data / ".styledrop" / "up.json").read_text())
        assert set(status["children"]) == {"prefect-server", "worker", "watch", "dashboard"}
        urls = status["urls"]

        # What `up` printed answers.
        assert httpx.get(f"{urls['prefect_api']}/health", timeout=10).status_code == 200
        assert httpx.get(urls["prefect_ui"], timeout=10).status_code == 200
        assert httpx.get(f"{urls['dashboard']}/_stcore/health", timeout=10).text == "ok"
        # File links are signed with the stack's own secret, made once in its home.
        from flows.settings import Settings
        from flows.storage import Storage

        port = int(env["STYLEDROP_DASHBOARD_PORT"])
        flow_side = Storage(urls["outputs"], Settings(data_dir=data, dashboard_port=port))
        image = httpx.get(flow_side.public_url("landscape.png"), timeout=10)
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert httpx.get(f"{urls['files']}/landscape.png", timeout=10).status_code == 403
        deployment = httpx.get(f"{urls['prefect_api']}/deployments/name/stylize/stylize")
        assert deployment.status_code == 200
        printed = log.read_text()
        for key in ("prefect_ui", "dashboard", "files", "inbox"):
            assert urls[key] in printed
        assert "backbone: random" in printed

        # Running it twice: refused while the first holds the data folder.
        second = subprocess.run(
            [sys.executable, "-m", "flows.cli", "up"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode != 0
        assert f"another `styledrop up` (pid {proc.pid}) is running" in second.stderr

        everything = descendants(proc.pid)
        assert {c["pid"] for c in status["children"].values()} <= everything
        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to `up`
        assert proc.wait(120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not [pid for pid in everything if pid_alive(pid)], log.read_text()
    assert not (data / ".styledrop" / "up.json").exists()
    print(f"\nup: samples stylised {samples_done:.0f} s after start; {len(everything)} processes")


@pytest.mark.timeout(120)
def test_up_with_a_port_taken_says_so_and_starts_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = up_env(data)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["STYLEDROP_DASHBOARD_PORT"] = str(port)
        t0 = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "flows.cli", "up"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert result.stderr.startswith(f"styledrop: error: port {port} on 127.0.0.1 is in use")
    assert "Is another styledrop up running?" in result.stderr
    assert "STYLEDROP_DASHBOARD_PORT" in result.stderr
    assert time.monotonic() - t0 < 30
    # Nothing was started: no logs, no status, no server home.
    assert not (data / ".styledrop" / "logs").exists()
    assert not (data / ".styledrop" / "up.json").exists()
    assert not (data / ".styledrop" / "prefect").exists()


@pytest.mark.timeout(300)
def test_a_part_that_dies_later_stops_the_stack_with_its_log(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    data = tmp_path / "data"
    log = artifacts_dir / "up.log"
    proc = start_up(up_env(data), log, "--no-samples")
    status_file = data / ".styledrop" / "up.json"
    try:
        wait_until(
            lambda: (
                status_file.exists()
                or (proc.poll() is not None and pytest.fail(f"up exited:\n{log.read_text()}"))
            ),
            240,
            "the stack to be up",
            0.5,
        )
        children = json.loads(status_file.read_text())["children"]
        everything = descendants(proc.pid)
        os.kill(children["watch"]["pid"], signal.SIGKILL)
        assert proc.wait(120) == 1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    printed = log.read_text()
    assert "styledrop: error: watch stopped unexpectedly (exit code -9)" in printed
    assert "Last lines of" in printed and "watch.log" in printed
    assert not [pid for pid in everything if pid_alive(pid)], printed
