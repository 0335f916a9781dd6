"""Nothing lost: a run whose process is killed mid-job resumes from its checkpoint when the job
is submitted again; a run served by `styledrop serve` and cancelled through the API stops,
ends Cancelled and gives its GPU slot back.

Both start real processes (a flow run killed with SIGKILL; Prefect's runner), so they are
slow.
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
from conftest import ROOT, make_image, stop_process, wait_until
from prefect.deployments import run_deployment
from prefect.states import Cancelling
from test_flow_stylize import client, configure, task_runs_of  # noqa: F401 - fixture

from flows import jobs
from flows.gpu import active_gpu_slots
from flows.storage import Storage
from flows.stylize import stylize

pytestmark = pytest.mark.slow

RUN_FLOW = (
    "import json, sys\n"
    "from flows.stylize import stylize\n"
    "stylize(sys.argv[1], [sys.argv[2]], json.loads(sys.argv[3]))\n"
)


def test_a_killed_run_resumes_from_its_checkpoint(
    prefect_api, client, tmp_path, monkeypatch, artifacts_dir  # noqa: F811
) -> None:
    # Checkpoint often; two GPU slots, because the killed process cannot hand its slot back
    # (its lease expires only after settings.gpu_lease_s) and the resubmission needs one now.
    # The killed run still looks Running on the server (no lost-run automation here): the
    # resubmission waits until it has been silent for STYLEDROP_LOST_RUN_AFTER_S, then takes over.
    settings = configure(
        monkeypatch, tmp_path, STYLEDROP_CHECKPOINT_INTERVAL_S="0.3", STYLEDROP_GPU_SLOTS="2",
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
    assert store.read_json(jobs.record_path(job_id))["status"] == "running"
    assert not store.exists(jobs.result_path(job_id)), "killed before it finished"

    state = stylize(str(content), [str(style)], options, return_state=True)

    assert state.is_completed(), state.message
    record = state.result()
    assert record["job_id"] == job_id and record["status"] == "completed"
    # At least where the checkpoint we saw was (the killed run may have written a later one).
    assert record["resumed_from_step"] >= saved["step"] > 0
    assert record["steps"] == record["total_steps"]
    assert store.exists(jobs.result_path(job_id))
    assert "wait for the run computing this job" in task_runs_of(
        client, state.state_details.flow_run_id
    )


def test_cancelling_a_served_run_stops_it_and_frees_the_gpu_slot(
    prefect_api, client, tmp_path, monkeypatch, artifacts_dir  # noqa: F811
) -> None:
    settings = configure(monkeypatch, tmp_path)
    store = Storage(settings.storage_root, settings)
    content = make_image(tmp_path / "photo.png", (48, 40), seed=7)
    style = make_image(tmp_path / "style.png", (48, 48), seed=8)
    log = artifacts_dir / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve"],
            cwd=ROOT, env=prefect_api.env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: "is being served" in log.read_text()
            or (server.poll() is not None and pytest.fail(f"serve exited:\n{log.read_text()}")),
            90, "styledrop serve to serve the deployment",
        )
        run = run_deployment(
            "stylize/stylize",
            parameters={
                "content": str(content),
                "styles": [str(style)],
                "options": {"size": 48, "iterations": 100_000, "min_size": 48},
            },
            timeout=0,
        )
        wait_until(lambda: active_gpu_slots(settings) == 1, 120, "the run to hold the GPU slot")
        wait_until(lambda: store.exists(jobs.run_link_path(str(run.id))), 30, "the run link")
        job_id = store.read_json(jobs.run_link_path(str(run.id)))["job_id"]

        client.set_flow_run_state(run.id, Cancelling())

        wait_until(lambda: client.read_flow_run(run.id).state.is_cancelled(), 30,
                   "the run to end Cancelled")
        wait_until(lambda: active_gpu_slots(settings) == 0, 15, "the GPU slot to be released")
        wait_until(
            lambda: store.read_json(jobs.record_path(job_id))["status"] == "cancelled", 15,
            "the job record to say cancelled",
        )
        assert not store.exists(jobs.result_path(job_id))
    finally:
        stop_process(server)
