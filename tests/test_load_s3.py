"""Load: 200 objects put at once into the S3 inbox (moto's S3 server over HTTP, found by
listing): each gets exactly one run and one result, every original is archived, nothing is left
behind, and the sensor's memory stays bounded. The limits and sizes: test_load.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import make_image, wait_until
from sensor_stack import BUCKET, S3, assert_each_once, dropped_names, peak_rss_mib, png_size
from test_load import BATCH_S, LOAD, OPTIONS, RSS_GROWTH_MIB, WORKER_LIMIT, N, report  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1800)]


def test_two_hundred_files_dropped_into_the_s3_inbox(watch, s3: S3, tmp_path: Path) -> None:
    from flows import storage

    prefix = "load/"
    root = f"{BUCKET}/{prefix}"
    fs, _ = storage.filesystem(f"s3://{BUCKET}", s3.settings)
    sensor = watch(
        "--s3",
        STYLEDROP_S3_BUCKET=BUCKET,
        STYLEDROP_S3_PREFIX=prefix,
        STYLEDROP_S3_WEBHOOK_PORT="0",  # found by listing the bucket
        STYLEDROP_SENSOR_RESCAN_S="1",
        **OPTIONS,
    ).start()
    start_mib = peak_rss_mib(sensor.proc.pid)
    started = time.monotonic()
    expected = dropped_names(N)
    for i, name in enumerate(expected):
        data = make_image(tmp_path / "src" / name, seed=i).read_bytes()
        fs.pipe_file(f"{root}inbox/{name}", data)

    def listing(folder: str) -> list[str]:
        fs.invalidate_cache()
        base = f"{root}{folder}/"
        return sorted(k[len(base) :] for k in fs.find(base) if not k.endswith("/"))

    def done() -> bool:
        if listing("failed"):
            pytest.fail(f"moved to failed/: {listing('failed')}")  # not retried by wait_until
        archived = [f for f in listing("archive") if f.endswith(".png")]
        return len(archived) >= N and not listing("processing")

    wait_until(done, BATCH_S, f"{N} originals archived and processing/ empty", 2.0)
    peak_mib = peak_rss_mib(sensor.proc.pid)
    report("S3 inbox", started, start_mib, peak_mib)
    assert_each_once(expected, listing, f"s3://{root}processing/")
    for name in expected[:: N // 10]:
        assert png_size(fs.cat_file(f"{root}outputs/{name}"))[0] == LOAD["size"]
    assert peak_mib - start_mib < RSS_GROWTH_MIB
    sensor.stop()
