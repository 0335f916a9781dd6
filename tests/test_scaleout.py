"""Scale-out end to end on one machine: a real Prefect server on PostgreSQL (as
docs/scale-out.md runs it for many machines), the administrator's setup (`prefect work-pool
create --type styledrop`, `styledrop worker --setup-only`, then `prefect deploy` with
deployments/prefect.yaml), warm `styledrop worker` processes on the styledrop work pool, and
S3 storage on moto's HTTP server.

Timing: flow runs send an alive event every 2 s (STYLEDROP_HEARTBEAT_S) and the lost-run
automation waits 20 s of silence (STYLEDROP_LOST_RUN_AFTER_S): far more than a loaded 2-core
machine takes between two alive events or to start a run on a warm worker, so a SIGKILLed
worker's run is rescheduled about 20 s after the kill and no healthy run is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ROOT,
    make_image,
    stop_process,
    wait_until,
)

from flows.stack import descendants, pid_alive

pytestmark = pytest.mark.slow

BUCKET = "styledrop-scaleout"
ROOT_PREFIX = "results"
POOL = "styledrop-gpu"  # deployments/prefect.yaml's pool
SHORT = {"size": 48, "iterations": 12}
# Long enough (several seconds even on an idle machine, checkpoints every 0.5 s) to be caught
# running with a checkpoint; no longer, since another worker computes the rest of it.
LONG = {"size": 48, "iterations": 250}


@dataclass
class Cluster:
    api_url: str
    env: dict[str, str]
    s3: Any  # a boto3 client on the moto server
    logs: Path

    def storage_url(self, rel: str) -> str:
        return f"s3://{BUCKET}/{ROOT_PREFIX}/{rel}"

    def read_json(self, rel: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=BUCKET, Key=f"{ROOT_PREFIX}/{rel}")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def exists(self, rel: str) -> bool:
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{ROOT_PREFIX}/{rel}")
        return any(o["Key"] == f"{ROOT_PREFIX}/{rel}" for o in listed.get("Contents", []))

    def start_worker(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "worker", "--name", name, "--gpus", "none", *extra],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str, postgres_prefect_server
) -> Iterator[Cluster]:
    import boto3

    tmp = tmp_path_factory.mktemp("scaleout")
    logs = ROOT / "test-artifacts" / "test_scaleout"
    logs.mkdir(parents=True, exist_ok=True)
    server = postgres_prefect_server
    endpoint = s3_endpoint
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env = server.env()
    env.update(aws)
    env.update(
        STYLEDROP_STORAGE=f"s3://{BUCKET}/{ROOT_PREFIX}",
        STYLEDROP_S3_ENDPOINT_URL=endpoint,
        STYLEDROP_DATA_DIR=str(tmp / "data"),
        STYLEDROP_BACKBONE="random",
        STYLEDROP_DEVICE="cpu",
        STYLEDROP_CHECKPOINT_INTERVAL_S="0.5",
        STYLEDROP_HEARTBEAT_S="2",
        STYLEDROP_LOST_RUN_AFTER_S="20",
        STYLEDROP_WORKER_GRACE_S="2",
        # Two workers share two cores with the rest of the machine: one thread each.
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_region(aws))
    s3.create_bucket(Bucket=BUCKET)
    try:
        # As the docs say: the pool with Prefect's own CLI, our automations (and the
        # deployment), then the deployment with Prefect's CLI too.
        pool = subprocess.run(
            [sys.executable, "-m", "prefect", "work-pool", "create", "--type", "styledrop", POOL],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pool.returncode == 0, pool.stdout + pool.stderr
        setup = subprocess.run(
            [sys.executable, "-m", "flows.cli", "worker", "--setup-only", "--gpus", "none"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr
        assert "automation 'styledrop-recover-lost-runs'" in setup.stdout
        assert "deployment stylize/stylize on pool" in setup.stdout
        deploy = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefect",
                "--no-prompt",
                "deploy",
                "--all",
                "--prefect-file",
                "deployments/prefect.yaml",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        cluster = Cluster(server.api_url, env, s3, logs)
        from prefect.client.orchestration import get_client

        with api(cluster), get_client(sync_client=True) as client:
            assert client.read_work_pool(POOL).type == "styledrop"
            assert client.read_deployment_by_name("stylize/stylize").work_pool_name == POOL
        yield cluster
    finally:
        stop_process(server.proc)


def _boto_region(aws: dict[str, str]) -> dict[str, str]:
    return {
        "region_name": aws["AWS_DEFAULT_REGION"],
        "aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"],
    }


# --- helpers: the Prefect API from this process -----------------------------------------------


def api(cluster: Cluster):  # type: ignore[no-untyped-def]
    """Prefect settings pointing this process's client at the cluster's server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: cluster.api_url})


def submit(cluster: Cluster, content: str, options: dict[str, Any]) -> str:
    from prefect.deployments import run_deployment

    with api(cluster):
        run = run_deployment(
            "stylize/stylize",
            parameters={"content": content, "styles": ["mosaic"], "options": options},
            timeout=0,
        )
    return str(run.id)


def read_runs(cluster: Cluster, ids: list[str]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with api(cluster), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return {str(r.id): r for r in runs}


def upload_content(cluster: Cluster, tmp: Path, index: int) -> str:
    path = make_image(tmp / f"c{index}.png", size=(48, 40), seed=100 + index)
    key = f"inputs/c{index}.png"
    cluster.s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    return f"s3://{BUCKET}/{key}"


def job_of(cluster: Cluster, run_id: str) -> str | None:
    link = cluster.read_json(f"_runs/{run_id}.json")
    return link.get("job_id") if link else None


def checkpointed(cluster: Cluster, run_id: str) -> bool:
    job = job_of(cluster, run_id)
    return bool(job) and cluster.exists(f"_jobs/{job}/checkpoint.pt")


def worker_of(record: dict[str, Any] | None) -> str:
    """The `styledrop worker --name` (a CPU worker: the name itself) whose run wrote
    ``record``."""
    assert record and record.get("worker"), record
    return record["worker"]["name"]


def machine_dies(proc: subprocess.Popen[bytes]) -> set[int]:
    """SIGKILL the worker and anything it started, as a lost machine would."""
    pids = descendants(proc.pid) | {proc.pid}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)
    return pids


def stop_gracefully(proc: subprocess.Popen[bytes], timeout: float) -> int:
    os.kill(proc.pid, signal.SIGTERM)
    return proc.wait(timeout)


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_twelve_jobs_spread_over_two_workers_and_survive_a_lost_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    started = time.monotonic()
    contents = [upload_content(cluster, tmp_path, i) for i in range(12)]
    workers = {"w1": cluster.start_worker("w1"), "w2": cluster.start_worker("w2")}
    wait_until(lambda: online_workers(cluster) >= {"w1", "w2"}, 120, "both workers polling", 0.5)
    left: set[int] = set()
    try:
        # One short job for each worker, then one long enough to be caught mid-way (it goes
        # to whichever worker is free first), then the rest.
        run_ids = [submit(cluster, c, SHORT) for c in contents[:2]]
        long_run = submit(cluster, contents[2], LONG)
        run_ids += [long_run] + [submit(cluster, c, SHORT) for c in contents[3:]]

        def long_job_checkpointed() -> Any:
            run = read_runs(cluster, [long_run])[long_run]
            return run.state.is_running() and checkpointed(cluster, long_run) and run

        wait_until(long_job_checkpointed, 240, "the long job to write a checkpoint", 0.3)
        # Who runs it, from its record: Prefect's worker label can name a worker that lost
        # the race to submit the run (labels are set before the Pending proposal).
        victim = worker_of(cluster.read_json(f"_jobs/{job_of(cluster, long_run)}/record.json"))
        killed_at = time.monotonic()
        killed = machine_dies(workers.pop(victim))
        # A replacement machine joins.
        workers["w3"] = cluster.start_worker("w3")

        def all_final() -> bool:
            runs = read_runs(cluster, run_ids)
            return len(runs) == 12 and all(r.state.is_final() for r in runs.values())

        wait_until(all_final, 480, "all twelve runs to finish", 1.0)
        recovered_after = time.monotonic() - killed_at
        runs = read_runs(cluster, run_ids)
        left = set().union(*(descendants(p.pid) | {p.pid} for p in workers.values()))
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                stop_gracefully(proc, 60)

    # Nothing lost: every run completed, each with its own job and a result in S3.
    states = {rid: r.state.name for rid, r in runs.items()}
    assert set(states.values()) == {"Completed"}, states
    jobs = {rid: job_of(cluster, rid) for rid in run_ids}
    assert len(set(jobs.values())) == 12, jobs
    records = {rid: cluster.read_json(f"_jobs/{job}/record.json") for rid, job in jobs.items()}
    for rid, record in records.items():
        assert record and record["status"] == "completed", (rid, record)
        assert record["flow_run_id"] == rid  # computed by this run, not reused from another
        assert cluster.exists(f"_jobs/{jobs[rid]}/result.png")

    # Spread: both first workers ran jobs - the jobs they completed, and the victim's long one.
    by_worker: dict[str, int] = {}
    for record in records.values():
        name = worker_of(record)
        by_worker[name] = by_worker.get(name, 0) + 1
    assert {"w1", "w2"} <= set(by_worker) | {victim}, (victim, by_worker)

    # The killed job: rescheduled by the automation (no new run, no Crashed state), resumed
    # from its checkpoint on another worker, and done once.
    lost = runs[long_run]
    assert lost.run_count == 2, lost.run_count
    record = records[long_run]
    assert worker_of(record) != victim, record["worker"]
    assert record["resumed_from_step"] > 0, record
    assert record["steps"] == record["total_steps"], record
    twice = {
        rid: state_history(cluster, rid)
        for rid, r in runs.items()
        if rid != long_run and r.run_count != 1
    }
    assert not twice, twice
    history = state_names(cluster, long_run)
    assert "AwaitingRetry" in history and "Crashed" not in history, history

    # Everything started is gone: the killed machine's processes and the stopped workers'.
    assert not [p for p in killed | left if pid_alive(p)]
    print(
        f"\nscale-out: {time.monotonic() - started:.0f} s in all; lost job finished "
        f"{recovered_after:.0f} s after the kill; runs by worker {by_worker}"
    )


def online_workers(cluster: Cluster) -> set[str]:
    from prefect.client.orchestration import get_client

    with api(cluster), get_client(sync_client=True) as client:
        return {w.name for w in client.read_workers_for_work_pool(POOL) if w.status == "ONLINE"}


@pytest.mark.timeout(400)
def test_sigterm_hands_a_running_job_back_to_the_pool(cluster: Cluster, tmp_path: Path) -> None:
    content = upload_content(cluster, tmp_path, 99)
    first = cluster.start_worker("w3", "--grace", "1")
    second = None
    try:
        run_id = submit(cluster, content, {**LONG, "seed": 7})
        wait_until(
            lambda: (
                read_runs(cluster, [run_id])[run_id].state.is_running()
                and checkpointed(cluster, run_id)
            ),
            180,
            "the job to run and write a checkpoint",
            0.3,
        )
        tree = descendants(first.pid)
        stopped_at = time.monotonic()
        assert stop_gracefully(first, 60) == 0
        # Handed back at once, by the worker: no waiting for the lost-run automation.
        state = read_runs(cluster, [run_id])[run_id].state
        assert state.name == "AwaitingRetry", state
        assert "worker was stopped" in (state.message or "")
        assert time.monotonic() - stopped_at < 30
        assert not [p for p in tree if pid_alive(p)]

        second = cluster.start_worker("w4")
        wait_until(
            lambda: read_runs(cluster, [run_id])[run_id].state.is_final(),
            180,
            "the handed-back job to finish on another worker",
            1.0,
        )
        run = read_runs(cluster, [run_id])[run_id]
        assert run.state.is_completed(), run.state
        record = cluster.read_json(f"_jobs/{job_of(cluster, run_id)}/record.json")
        assert record["status"] == "completed" and record["resumed_from_step"] > 0, record
        assert worker_of(record) == "w4", record["worker"]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                stop_gracefully(proc, 60)


@pytest.mark.timeout(400)
def test_sigterm_lets_a_running_job_finish_within_the_grace(
    cluster: Cluster, tmp_path: Path
) -> None:
    content = upload_content(cluster, tmp_path, 98)
    worker = cluster.start_worker("w5", "--grace", "240")
    try:
        run_id = submit(cluster, content, {**SHORT, "seed": 5})
        wait_until(
            lambda: read_runs(cluster, [run_id])[run_id].state.is_running(),
            180,
            "the job to start",
            0.3,
        )
        tree = descendants(worker.pid)
        # The Prefect worker stops polling at once; its run carries on to the end.
        assert stop_gracefully(worker, 300) == 0
        run = read_runs(cluster, [run_id])[run_id]
        assert run.state.is_completed(), run.state
        assert run.run_count == 1
        record = cluster.read_json(f"_jobs/{job_of(cluster, run_id)}/record.json")
        assert worker_of(record) == "w5", record
        assert not [p for p in tree if pid_alive(p)]
    finally:
        if worker.poll() is None:
            machine_dies(worker)


@pytest.mark.timeout(400)
def test_the_same_job_submitted_twice_at_once_is_computed_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Two runs of one job at the same moment, one on each worker: one computes it, the other
    waits for it and returns its result; both end Completed."""
    content = upload_content(cluster, tmp_path, 97)
    options = {"size": 48, "iterations": 150, "seed": 9}
    workers = [cluster.start_worker("d1"), cluster.start_worker("d2")]
    try:
        wait_until(lambda: online_workers(cluster) >= {"d1", "d2"}, 120, "both workers", 0.5)
        run_ids = [submit(cluster, content, options) for _ in range(2)]
        wait_until(
            lambda: all(r.state.is_final() for r in read_runs(cluster, run_ids).values()),
            300,
            "both runs to finish",
            1.0,
        )
    finally:
        for proc in workers:
            if proc.poll() is None:
                stop_gracefully(proc, 60)

    runs = read_runs(cluster, run_ids)
    assert {r.state.name for r in runs.values()} == {"Completed"}, {
        rid: state_history(cluster, rid) for rid in run_ids
    }
    (job,) = {job_of(cluster, rid) for rid in run_ids}
    record = cluster.read_json(f"_jobs/{job}/record.json")
    assert record["status"] == "completed" and record["flow_run_id"] in run_ids, record
    # One computation, from the start: no takeover, every step done once by one run.
    assert record["resumed_from_step"] == 0 and record["steps"] == record["total_steps"]
    computing = record["flow_run_id"]
    (waiting,) = set(run_ids) - {computing}
    tasks = {rid: task_names(cluster, rid) for rid in run_ids}
    assert tasks[computing].count("stylize image") == 1, tasks
    assert "stylize image" not in tasks[waiting], tasks
    assert "reuse result" in tasks[waiting], tasks
    # It waited for the other run while that one was computing (not just found it done).
    wait_until(
        lambda: any("is being computed by flow run" in m for m in log_lines(cluster, waiting)),
        30,
        "the waiting run's log line",
    )
    # Both runs' persisted results (under the storage root) are the job's record.
    results = {rid: persisted_result(cluster, runs[rid]) for rid in run_ids}
    assert results[computing] == record
    assert results[waiting]["reused"] is True and results[waiting]["reused_by"] == waiting
    def who(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("reused", "reused_by")}

    assert who(results[waiting]) == who(record)


def task_names(cluster: Cluster, run_id: str) -> list[str]:
    """The names of a flow run's task runs, without Prefect's "-<hex>" suffix."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with api(cluster), get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    return [tr.name.rsplit("-", 1)[0] for tr in task_runs]


def log_lines(cluster: Cluster, run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with api(cluster), get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [log.message for log in logs]


def persisted_result(cluster: Cluster, run: Any) -> dict[str, Any]:
    """The value of a run's persisted result, read from S3 where its metadata says it is."""
    key = run.state.data.storage_key
    prefix = cluster.storage_url("_prefect_results/")
    assert key.startswith(prefix), key
    body = cluster.s3.get_object(Bucket=BUCKET, Key=key.removeprefix(f"s3://{BUCKET}/"))
    return json.loads(json.loads(body["Body"].read())["result"])


def state_history(cluster: Cluster, run_id: str) -> list[str]:
    """A run's states with time and message, for failure messages."""
    from prefect.client.orchestration import get_client

    with api(cluster), get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run_id)
    return [f"{s.timestamp:%H:%M:%S.%f} {s.name}: {(s.message or '')[:80]}" for s in states]


def state_names(cluster: Cluster, run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client

    with api(cluster), get_client(sync_client=True) as client:
        return [s.name for s in client.read_flow_run_states(run_id)]
