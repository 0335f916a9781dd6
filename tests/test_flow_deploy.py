"""The work-pool path, as a person would follow it: setup-work-pool.sh, `prefect deploy` with
deployments/prefect.yaml, a process worker - and a run of `stylize/stylize` completes there.

Uses a Prefect server of its own: deploying turns `stylize/stylize` into a work-pool
deployment, which the session server's served deployment must not become.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, make_image, start_prefect_server, stop_process, wait_until

from flows import jobs
from flows.storage import Storage

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).parent / "prefect")


def test_setup_script_deploy_and_a_worker_run_the_stylize_deployment(
    tmp_path, artifacts_dir
) -> None:
    server = start_prefect_server(tmp_path / "prefect-home")
    api = httpx.Client(base_url=server.api_url, timeout=10)
    storage_root = tmp_path / "out"
    env = {
        **server.env(),
        "PREFECT": PREFECT,
        "STYLEDROP_STORAGE": str(storage_root),
        "STYLEDROP_GPU_SLOTS": "2",
    }
    for name in ("STYLEDROP_WORK_POOL", "STYLEDROP_GPU_LIMIT"):
        env.pop(name, None)  # the defaults, as in the yaml
    worker = None
    try:
        setup = subprocess.run(
            ["bash", "deployments/setup-work-pool.sh"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=180,
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr
        assert api.get("/work_pools/styledrop-gpu").json()["type"] == "process"
        assert api.get("/v2/concurrency_limits/styledrop-gpu").json()["limit"] == 2

        deploy = subprocess.run(
            [PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file",
             "deployments/prefect.yaml"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        deployment = api.get("/deployments/name/stylize/stylize").json()
        assert deployment["work_pool_name"] == "styledrop-gpu"
        assert deployment["entrypoint"] == "flows/stylize.py:stylize"

        content = make_image(tmp_path / "photo.png", (48, 40), seed=9)
        style = make_image(tmp_path / "style.png", (48, 48), seed=10)
        run = api.post(
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {
                "content": str(content), "styles": [str(style)],
                "options": {"size": 32, "iterations": 5, "min_size": 32},
            }},
        ).json()
        log = artifacts_dir / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", "styledrop-gpu", "--run-once"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

        def final_state() -> str | None:
            state = api.get(f"/flow_runs/{run['id']}").json()["state"]
            return state["type"] if state["type"] in ("COMPLETED", "FAILED", "CRASHED",
                                                      "CANCELLED") else None

        final = wait_until(final_state, 240, "the worker to run the flow")
        assert final == "COMPLETED", log.read_text()[-3000:]
        store = Storage(str(storage_root))
        link = store.read_json(jobs.run_link_path(run["id"]))
        assert store.read_json(link["record"])["status"] == "completed"
        assert store.exists(jobs.result_path(link["job_id"]))
    finally:
        if worker is not None:
            stop_process(worker)
        api.close()
        stop_process(server.proc)
