"""Every script under bench/ runs, at its smallest options, so that a refactor cannot break a
benchmark unnoticed (bench/service.py once did: an import of a name that had moved). The
figures are not checked, only that each script gets to its report; bench/RESULTS.md has them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zlib

import pytest
from conftest import ROOT


def run(script: str, *args: str, timeout: float) -> str:
    env = dict(os.environ)
    for name in ("PREFECT_API_URL", "PREFECT_HOME"):  # bench/service.py starts its own server
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_engine_bench() -> None:
    out = run(
        "engine.py",
        *("--device", "cpu", "--sizes", "32", "--steps", "1", "--rounds", "1", "--no-jobs"),
        *("--threads", "1"),
        timeout=240,
    )
    assert "| 32 |" in out and "load average at the end" in out


def test_quality_bench() -> None:
    out = run(
        "quality.py",
        *("--device", "cpu", "--size", "32", "--iterations", "2", "--evaluations", "2"),
        *("--every", "1", "--threads", "1"),
        timeout=240,
    )
    assert "| engine, " in out and "| baseline, style weight 1e+06 (2 evaluations) |" in out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_service_bench() -> None:
    """The real stack: a Prefect server, the warm worker (2 jobs) and Prefect's process worker
    (1 job), with the workers' API requests counted."""
    out = run(
        "service.py",
        *("--jobs", "2", "--baseline-jobs", "1", "--size", "32", "--iterations", "2"),
        timeout=840,
    )
    last = dict(item.split("=") for item in out.strip().splitlines()[-1].split())
    assert last["jobs"] == "2" and "failed" not in last, out
    assert float(last["api_calls_per_job"]) > 0 and float(last["events_per_job"]) > 0, out
    assert "Prefect's process worker (a process per run): jobs=1 " in out
    assert "| POST /api/flow_runs/{id}/set_state |" in out  # the flow runs' own requests
    assert "create_flow_run" not in out  # the bench's submissions are not the worker's


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_refusal_bench() -> None:
    """The real stack (server, warm worker, folder sensor) with one tiny busy job: every hostile
    file gets its note in failed/ from the sensor without a run, and the baseline runs end."""
    out = run(
        "refusal.py",
        *("--busy-jobs", "1", "--busy-size", "32", "--busy-iterations", "5"),
        *("--settle-s", "0.2"),
        timeout=540,
    )
    last = dict(item.split("=") for item in out.strip().splitlines()[-1].split())
    assert last["files"] == "7" and last["sensor_runs"] == "0", out
    assert float(last["sensor_median_s"]) > 0 and float(last["baseline_median_s"]) > 0, out
    assert "| empty.jpg | an empty .jpg |" in out and "the file is empty (0 bytes)" in out, out
    rows = [line for line in out.splitlines() if line.startswith("| ") and ".jpg |" in line]
    assert len(rows) == 7, out
    # Every baseline submission ended in the flow's refusal or the server's, none completed.
    assert all("| Failed: " in row or "| refused at submission" in row for row in rows), out


# --- the request counter of bench/service.py -----------------------------------------------------


def bench_service():
    spec = importlib.util.spec_from_file_location("bench_service", ROOT / "bench" / "service.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def frame(payload: bytes, opcode: int = 1, fin: bool = True, rsv1: bool = False) -> bytes:
    """A client's websocket frame (masked), as RFC 6455 lays it out."""
    key = b"\x12\x34\x56\x78"
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("compressed", [False, True])
def test_the_counter_reads_requests_and_websocket_events(compressed: bool) -> None:
    """Requests with bodies, an upgrade, then the auth message, a long event split over two
    frames with a ping between them, and a short event; fed one byte at a time."""
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)

    def message(text: str) -> list[bytes]:
        data = text.encode()
        if compressed:  # permessage-deflate: a sync flush without its last four bytes
            data = (deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4]
        return [data]

    run_id = "0b6e1c8e-2a52-4c63-9d4e-1f0f3e1b2c3d"
    body = b'{"state": {"type": "RUNNING"}}'
    stream = (
        f"POST /api/flow_runs/{run_id}/set_state HTTP/1.1\r\nHost: x\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        + b"GET /api/health?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /api/events/in HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    [auth] = message('{"type": "auth", "token": null}')
    stream += frame(auth, rsv1=compressed)
    [long_event] = message('{"event": "prefect.task-run.Running", "payload": "' + "x" * 300 + '"}')
    half = len(long_event) // 2
    stream += frame(long_event[:half], fin=False, rsv1=compressed)
    stream += frame(b"ping", opcode=9)
    stream += frame(long_event[half:], opcode=0)
    [short_event] = message('{"event": "styledrop.run.alive"}')
    stream += frame(short_event, rsv1=compressed)

    notes: list[str] = []
    reader = bench_service().Requests(notes.append)
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
    assert notes == [
        "POST /api/flow_runs/{id}/set_state",
        "GET /api/health",
        "GET /api/events/in",
        "EVENT prefect.task-run.Running",
        "EVENT styledrop.run.alive",
    ]
