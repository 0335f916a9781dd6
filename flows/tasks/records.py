"""The job record around the computation: who computes a job (claim it, or wait for the run
that does and reuse its result), the result written atomically, and how a run that stopped
left its job."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from PIL import Image
from prefect import get_run_logger, task

import engine
from flows.alive import run_is_alive
from flows.checks import output_format
from flows.jobs import Claim, Job, JobRecord, JobStatus, RunLink
from flows.layout import JobLayout, run_link_path
from flows.settings import get_settings
from flows.storage import Storage, get_storage, is_s3, write_bytes
from flows.tasks.retry import io_task_options
from flows.tasks.summary import publish_summary
from flows.tasks.transfer import Stylized

logger = logging.getLogger(__name__)

# The lock around claiming a job on S3 storage (global_claim_lock): a Prefect global
# concurrency limit of one slot.
CLAIM_LIMIT = "styledrop-job-claim"
CLAIM_LEASE_S = 60  # Prefect's shortest lease


def read_record(store: Storage, job_id: str) -> JobRecord | None:
    data = store.read_json(JobLayout(job_id).record)
    return JobRecord.model_validate(data) if data else None


def write_record(store: Storage, record: JobRecord) -> None:
    store.write_bytes(JobLayout(record.job_id).record, record.to_json())


def link_run(store: Storage, flow_run_id: str | None, link: RunLink) -> None:
    """``_runs/<flow_run_id>.json``: lets the dashboard find a run's job, or why it had none."""
    if flow_run_id:
        store.write_bytes(run_link_path(flow_run_id), link.model_dump_json(indent=2).encode())


def finished_record(store: Storage, job_id: str) -> JobRecord | None:
    """The record of ``job_id`` if it was completed and its result is still there."""
    record = read_record(store, job_id)
    if record and record.is_completed and store.exists(JobLayout(job_id).result):
        return record
    return None


@task(name="claim job", **io_task_options())
def claim_job(job: Job, flow_run_id: str | None, force: bool) -> JobRecord:
    """The job's record for this run: a finished one to reuse (unless ``force``), or this run's
    new "running" record once no other live run computes the job. While another run computes
    it, wait for that run: reuse its result, or take over if it ends without one."""
    store = get_storage()
    settings = get_settings()
    while True:
        if not force and (done := finished_record(store, job.job_id)):
            return done
        claim = try_claim(store, job, flow_run_id, force)
        if claim.record is not None:
            return claim.record
        get_run_logger().info(
            "job %s is being computed by flow run %s; waiting for its result",
            job.job_id,
            claim.owner,
        )
        while not (done := finished_record(store, job.job_id)):
            if not run_is_alive(claim.owner, settings.lost_run_after_s):
                break
            time.sleep(settings.duplicate_poll_s)
        if done and not force:
            return done


def try_claim(store: Storage, job: Job, flow_run_id: str | None, force: bool) -> Claim:
    """Write this run's new "running" record, unless the record names another run that is
    still alive (it computes this job now) or that has finished it since this run last looked:
    then that run, to wait for (a finished one's result is found at once).

    Held under a lock of the job's (``claim_lock``), so two runs starting the same job at the
    same moment cannot both find no owner and both compute it."""
    with claim_lock(store, job.job_id, flow_run_id):
        record = read_record(store, job.job_id)
        owner = record.flow_run_id if record else ""
        if not force and finished_record(store, job.job_id):
            return Claim(owner=owner)
        if record and record.status is JobStatus.RUNNING and owner != (flow_run_id or ""):
            if run_is_alive(owner, get_settings().lost_run_after_s):
                return Claim(owner=owner)
            get_run_logger().info("job %s: its run %s is gone; taking over", job.job_id, owner)
        # The Prefect worker running this flow run (flows.worker) names itself in the environment.
        worker = {"host": socket.gethostname(), "name": os.environ.get("PREFECT__WORKER_NAME", "")}
        mine = JobRecord.start(job, flow_run_id or "", force, worker)
        write_record(store, mine)
        return Claim(record=mine)


@contextmanager
def claim_lock(store: Storage, job_id: str, flow_run_id: str | None) -> Iterator[None]:
    """The lock around the read-check-write of a job's record, held for a moment.

    A local storage root is one machine's (or a filesystem it shares): a lock file in the job's
    folder, flock'ed; the kernel lets go of it when its holder dies. An S3 root is shared by
    machines that share nothing else but the Prefect server: a Prefect global concurrency
    limit of one slot (``global_claim_lock``). Not that for both: on SQLite, the server answers
    a write in a burst with a 503 now and then, and Prefect's client waits 2 s before it tries
    again - for a lock held for milliseconds, on most jobs (bench/RESULTS.md)."""
    if store.is_s3:
        with global_claim_lock(flow_run_id):
            yield
        return
    path = Path(store.url(JobLayout(job_id).claim_lock))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


@contextmanager
def global_claim_lock(flow_run_id: str | None) -> Iterator[None]:
    """A Prefect global concurrency limit of one slot as a lock, shared by every machine that
    talks to the server; a holder that dies loses it when its lease expires (60 s + up to 15 s).

    Slots are asked for directly rather than with ``prefect.concurrency``: that one waits as
    long as the server's Retry-After says, seconds that grow with every refusal in a burst."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.exceptions import ObjectAlreadyExists

    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(flow_run_id)) if flow_run_id else None
    with get_client(sync_client=True) as client:
        while True:
            try:
                lease = client.increment_concurrency_slots_with_lease(
                    [CLAIM_LIMIT], 1, "concurrency", CLAIM_LEASE_S, holder
                ).json()
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != httpx.codes.LOCKED:
                    raise
                time.sleep(random.uniform(0.02, 0.2))
                continue
            if lease["limits"]:
                break
            # No such limit (first use on this server): the lease holds nothing; create it.
            client.release_concurrency_slots_with_lease(UUID(lease["lease_id"]))
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=CLAIM_LIMIT, limit=1)
                )
        lease_id = UUID(lease["lease_id"])
        try:
            yield
        finally:
            client.release_concurrency_slots_with_lease(lease_id)


@task(name="save result", **io_task_options())
def save_result(job: Job, stylized: Stylized, record: JobRecord) -> JobRecord:
    """result.png, then the caller's ``output`` (+ ``<output>.json``), then the record marked
    completed - last, so "completed" always means every file is in place - then the run's
    summary."""
    store = get_storage()
    store.write_bytes(job.layout.result, stylized.png)
    done = record.completed(stylized.summary)
    if job.output:
        done = write_output(store, job.output, stylized.png, done)
    write_record(store, done)
    publish_summary(done, store)
    return done


@task(name="reuse result", **io_task_options())
def reuse_result(job: Job, record: JobRecord, flow_run_id: str | None) -> JobRecord:
    """The finished job's record, marked reused; its result is copied to ``output`` too
    when this request asked for one."""
    store = get_storage()
    reused = record.reused_for(flow_run_id, job.output)
    if job.output:
        reused = write_output(store, job.output, store.read_bytes(job.layout.result), reused)
    publish_summary(reused, store)
    return reused


def end_record(record: JobRecord, status: JobStatus, error: str | None) -> JobRecord:
    ended = record.ended(status, error)
    write_record(get_storage(), ended)
    return ended


def output_location(store: Storage, output: str) -> str:
    """A relative ``output`` is inside the storage root; absolute paths and URLs are kept."""
    if is_s3(output) or Path(output).is_absolute():
        return output
    return store.url(output)


def write_output(store: Storage, output: str, png: bytes, record: JobRecord) -> JobRecord:
    """The result where the caller asked, in the format its extension names, with the
    record beside it as ``<output>.json``; returns the record naming where it went."""
    url = output_location(store, output)
    fmt = output_format(output)
    data = (
        png
        if fmt == "png"
        else engine.encode_image(Image.open(io.BytesIO(png)), fmt, {"job_id": record.job_id})
    )
    record = record.model_copy(update={"output": url})
    write_bytes(url, data, store.settings)
    write_bytes(f"{url}.json", record.to_json(), store.settings)
    return record


def record_run_end(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (failure, crash, cancellation): mark the run's job record with how it ended.

    Runs in the flow's process, or in the runner's when the runner had to kill the process
    (a cancel); idempotent, and it only touches a record this run still owns as "running".
    """
    cancelled = state.is_cancelled() or state.is_cancelling()
    status = JobStatus.CANCELLED if cancelled else JobStatus.FAILED
    try:
        store = get_storage(get_settings())
        link = store.read_json(run_link_path(str(flow_run.id)))
        if not link or not link.get("job_id"):
            return  # refused before it became a job, or never started
        record = read_record(store, link["job_id"])
        if not record or record.flow_run_id != str(flow_run.id):
            return
        if record.status is not JobStatus.RUNNING:
            return
        write_record(store, record.ended(status, state.message))
    except Exception:  # a hook must not turn a cancel into a crash
        logger.exception("could not mark the job record of flow run %s", flow_run.id)
