"""Nothing lost: a run whose process is killed mid-job resumes from its checkpoint when the job
is submitted again. It starts a real process (a flow run killed with SIGKILL), so it is slow.
(Cancelling a run on the warm worker: tests/test_worker.py.)
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, configure, make_image, stop_process, wait_until

from flows.layout import JobLayout
from flows.storage import Storage
from flows.stylize import stylize

pytestmark = pytest.mark.slow

RUN_FLOW = (
    "import json, sys\n"
    "from flows.stylize import stylize\n"
    "stylize(sys.argv[1], [sys.argv[2]], json.loads(sys.argv[3]))\n"
)


def test_a_killed_run_resumes_from_its_checkpoint(
    prefect_api, client, tmp_path, monkeypatch, artifacts_dir
) -> None:
    # Checkpoint often. The killed run still looks Running on the server (no lost-run
    # automation here): the resubmission waits until it has been silent for
    # STYLEDROP_LOST_RUN_AFTER_S, then takes over.
    settings = configure(
        monkeypatch, tmp_path, STYLEDROP_CHECKPOINT_INTERVAL_S="0.3",
        STYLEDROP_LOST_RUN_AFTER_S="12",
    )
    store = Storage(settings.storage_root, settings)
    content = make_image(tmp_path / "photo.png", (48, 40), seed=5)
    style = make_image(tmp_path / "style.png", (48, 48), seed=6)
    options = {"size": 32, "iterations": 60, "min_size": 32}
    log = artifacts_dir / "killed-run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN_FLOW, str(content), str(style), json.dumps(options)],
            cwd=ROOT, env=prefect_api.env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        checkpoint = wait_until(
            lambda: next(iter(Path(store.root).glob("_jobs/*/checkpoint.pt")), None)
            or (proc.poll() is not None and pytest.fail(f"run exited early:\n{log.read_text()}")),
            120, "the first checkpoint",
        )
        os.killpg(proc.pid, signal.SIGKILL)  # as if the machine was lost
        proc.wait(10)
    finally:
        stop_process(proc)
    job_id = checkpoint.parent.name
    saved = torch.load(io.BytesIO(checkpoint.read_bytes()), weights_only=True)
    assert saved["job_id"] == job_id and saved["step"] > 0
    assert store.read_json(JobLayout(job_id).record)["status"] == "running"
    assert not store.exists(JobLayout(job_id).result), "killed before it finished"

    state = stylize(str(content), [str(style)], options, return_state=True)

    assert state.is_completed(), state.message
    record = state.result()
    assert record["job_id"] == job_id and record["status"] == "completed"
    # At least where the checkpoint we saw was (the killed run may have written a later one).
    assert record["resumed_from_step"] >= saved["step"] > 0
    assert record["steps"] == record["total_steps"]
    assert store.exists(JobLayout(job_id).result)
    # It waited for the killed run (still Running on the server) until that went silent.
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    run_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    messages = wait_until(
        lambda: [log.message for log in client.read_logs(run_filter)], 30, "the run's logs"
    )
    assert any("is being computed by flow run" in m for m in messages), messages

