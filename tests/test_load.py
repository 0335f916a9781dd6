"""Load: 200 files dropped at once into the folder inbox (the S3 inbox: test_load_s3.py, a
module of its own so that the two run side by side under ``-n 2 --dist loadfile``). Each file
gets exactly one run and one result, every original is archived, nothing is left behind, and
the sensor's memory stays bounded.

Tiny jobs (32 px, one step, the random backbone) so that the module takes minutes: what is
under load here is the plumbing (sensor, Prefect, worker, storage), not the engine. The worker
runs 4 jobs at once (``--limit 4``), as a user would for jobs this small on a CPU: each is
mostly Prefect's orchestration, which overlaps. Figures: bench/RESULTS.md ("Load")."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_image, wait_until
from sensor_stack import (
    LOAD,
    assert_each_once,
    dropped_names,
    files,
    peak_rss_mib,
    png_size,
)

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1800)]

N = 200
WORKER_LIMIT = 4  # read by sensor_stack.served
OPTIONS = {"STYLEDROP_SENSOR_OPTIONS": json.dumps(LOAD)}
# The sensor's peak resident memory may grow this much over its peak after start-up while it
# handles the 200 files: measured growth is a few MiB (bench/RESULTS.md), so a leak of even
# 0.5 MiB per file breaks it.
RSS_GROWTH_MIB = 100
BATCH_S = 1500  # a generous wait for the whole batch on a loaded 2-core machine


def report(what: str, started: float, start_mib: float, peak_mib: float) -> None:
    print(  # shown with -s: the figures for bench/RESULTS.md
        f"\nLOAD {what}: {N} files in {(time.monotonic() - started) / 60:.1f} min; sensor peak "
        f"RSS {peak_mib:.0f} MiB ({start_mib:.0f} MiB after start-up)"
    )


def test_two_hundred_files_dropped_into_the_folder_inbox(watch, tmp_path: Path) -> None:
    sensor = watch(**OPTIONS).start()
    start_mib = peak_rss_mib(sensor.proc.pid)
    started = time.monotonic()
    expected = dropped_names(N)
    for i, name in enumerate(expected):
        make_image(tmp_path / "inbox" / name, seed=i)

    def listing(folder: str) -> list[str]:
        return files(tmp_path / folder) if (tmp_path / folder).exists() else []

    def done() -> bool:
        if listing("failed"):
            pytest.fail(f"moved to failed/: {listing('failed')}")  # not retried by wait_until
        archived = [f for f in listing("archive") if f.endswith(".png")]
        return len(archived) >= N and not listing("processing")

    wait_until(done, BATCH_S, f"{N} originals archived and processing/ empty", 2.0)
    peak_mib = peak_rss_mib(sensor.proc.pid)
    report("folder inbox", started, start_mib, peak_mib)
    assert_each_once(expected, listing, str(tmp_path / "processing") + "/")
    for name in expected[:: N // 10]:
        assert png_size((tmp_path / "outputs" / name).read_bytes())[0] == LOAD["size"]
    assert peak_mib - start_mib < RSS_GROWTH_MIB
    sensor.stop()
