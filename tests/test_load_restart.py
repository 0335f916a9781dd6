"""Load with an outage: a batch dropped into the folder inbox, the Prefect server stopped for
30 s while some files are done, some running and some not yet submitted, then started again
(the same database, the same port). Still every file once: one run, one result, archived.

The module has a Prefect server of its own (it is stopped mid-test), so it runs apart from the
session's; the stack is sensor_stack.py's, as in test_load.py."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    PrefectServer,
    drain_prefect_workers,
    make_image,
    start_prefect_server,
    stop_process,
    wait_until,
)
from sensor_stack import LOAD, assert_each_once, dropped_names, files

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1800)]

N = 60  # enough to have files done, running and waiting when the server stops
WORKER_LIMIT = 4  # read by sensor_stack.served, as in test_load.py
OUTAGE_S = 30
BATCH_S = 1200


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """This module's own Prefect server (replacing conftest's session one for the stack here),
    and this process's client pointed at it."""
    from prefect.context import refresh_global_settings_context

    server = start_prefect_server(tmp_path_factory.mktemp("prefect-restart-home"))
    old = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_HOME"] = str(server.home)
    refresh_global_settings_context()
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            drain_prefect_workers()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        refresh_global_settings_context()
        stop_process(server.proc)


def test_prefect_server_down_for_thirty_seconds_mid_batch(
    watch, prefect_api: PrefectServer, tmp_path: Path
) -> None:
    sensor = watch(STYLEDROP_SENSOR_OPTIONS=json.dumps(LOAD)).start()
    expected = dropped_names(N)
    for i, name in enumerate(expected):
        make_image(tmp_path / "inbox" / name, seed=i)

    def listing(folder: str) -> list[str]:
        return files(tmp_path / folder) if (tmp_path / folder).exists() else []

    def archived() -> int:
        if listing("failed"):
            raise AssertionError(f"failed: {listing('failed')}")
        return len([f for f in listing("archive") if f.endswith(".png")])

    def results() -> int:
        return len([f for f in listing("outputs") if f.endswith(".png")])

    # Stopped as the first results come: files done, running, and still to be submitted.
    wait_until(lambda: results() >= N // 10, BATCH_S, f"{N // 10} results", 0.3)
    port = int(prefect_api.api_url.rsplit(":", 1)[1].split("/")[0])
    stop_process(prefect_api.proc)
    down_at = f"{results()} results, {archived()} archived"
    time.sleep(OUTAGE_S)  # the outage itself, not a wait for something
    assert sensor.proc.poll() is None, "the sensor exited while the server was down"
    restarted = start_prefect_server(prefect_api.home, port=port)
    prefect_api.proc = restarted.proc  # the fixture stops this one
    print(f"\nRESTART: server down {OUTAGE_S} s with {down_at} of {N} files")

    def done() -> bool:
        return archived() >= N and not listing("processing")

    wait_until(done, BATCH_S, f"{N} originals archived and processing/ empty", 2.0)
    assert_each_once(expected, listing, str(tmp_path / "processing") + "/")
    sensor.stop()
