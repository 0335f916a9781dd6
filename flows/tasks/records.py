"""Step 3 and the bookkeeping around it: the job record, the run -> job link the dashboard
follows, the result written atomically, and reuse of a job that is already done."""

from __future__ import annotations

import io
import logging
import os
import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from PIL import Image
from prefect import get_run_logger, task

import engine
from flows import jobs, storage
from flows.alive import ALIVE_EVENT
from flows.jobs import Job
from flows.settings import get_settings
from flows.storage import Storage, get_storage, is_s3
from flows.tasks.retry import io_task_options
from flows.tasks.transfer import Stylized
from flows.tasks.validate import output_format

logger = logging.getLogger(__name__)

# The lock around claiming a job (claim_job), a Prefect global concurrency limit of one slot.
CLAIM_LIMIT = "styledrop-job-claim"
CLAIM_LEASE_S = 60  # Prefect's shortest lease
# Flow run state types of a run that is working on its job, or about to stop doing so.
OWNER_ALIVE = {"PENDING", "RUNNING", "CANCELLING"}


@task(name="link run to job", **io_task_options())
def link_run_to_job(flow_run_id: str | None, job_id: str) -> None:
    """``_runs/<flow_run_id>.json``: lets the dashboard find a run's job and record."""
    if flow_run_id:
        get_storage().write_json(
            storage.run_link_path(flow_run_id),
            {"job_id": job_id, "record": storage.record_path(job_id)},
        )


@task(name="record refusal", **io_task_options())
def link_rejected_run(flow_run_id: str | None, reason: str) -> None:
    """A refused run has no job; its link says why, for the dashboard."""
    if flow_run_id:
        get_storage().write_json(
            storage.run_link_path(flow_run_id),
            {"job_id": None, "record": None, "status": "rejected", "error": reason},
        )


@task(name="look for a finished job", **io_task_options())
def find_completed_job(job_id: str) -> dict[str, Any] | None:
    """The record of ``job_id`` if it was completed and its result is still there."""
    store = get_storage()
    record = store.read_json(storage.record_path(job_id))
    if jobs.is_completed(record) and store.exists(storage.result_path(job_id)):
        return record
    return None


@task(name="claim job", **io_task_options())
def claim_job(job: Job, flow_run_id: str | None, force: bool) -> dict[str, Any] | str:
    """This run's new "running" record, written unless the record names another run that is
    still alive (it computes this job now) or that has finished it since this run last looked:
    then that run's id, to wait for (a finished one's result is found at once).

    Held under one short global lock, so two runs starting the same job at the same moment
    cannot both find no owner and both compute it."""
    store = get_storage()
    with claim_lock(flow_run_id):
        record = store.read_json(storage.record_path(job.job_id))
        owner = (record or {}).get("flow_run_id") or ""
        if not force and find_completed_job.fn(job.job_id):
            return owner
        if (record or {}).get("status") == jobs.RUNNING and owner != (flow_run_id or ""):
            if run_is_alive(owner, get_settings().lost_run_after_s):
                return owner
            get_run_logger().info("job %s: its run %s is gone; taking over", job.job_id, owner)
        # The Prefect worker running this flow run (flows.worker) names itself in the environment.
        worker = {"host": socket.gethostname(), "name": os.environ.get("PREFECT__WORKER_NAME", "")}
        record = jobs.new_record(job, flow_run_id or "", force, worker)
        store.write_json(storage.record_path(job.job_id), record)
        return record


@contextmanager
def claim_lock(flow_run_id: str | None) -> Iterator[None]:
    """A Prefect global concurrency limit of one slot as a lock around the read-check-write of
    a job record, shared by every machine that talks to the server. Held for a moment; a
    holder that dies loses it when its lease expires (60 s + up to 15 s).

    Slots are asked for directly rather than with ``prefect.concurrency``: that one waits as
    long as the server's Retry-After says, seconds that grow with every refusal in a burst,
    for a lock held for milliseconds."""
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
                time.sleep(random.uniform(0.05, 0.3))
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


def run_is_alive(flow_run_id: str, silent_after_s: float) -> bool:
    """Whether the flow run is working on its job, as the lost-run automation sees it: Pending,
    Running or Cancelling (about to stop), and either in that state for less than
    ``silent_after_s`` or with a ``styledrop.run.alive`` event in the last ``silent_after_s``.
    A run killed with its machine stays Running on the server until the automation puts it
    back in the queue; it counts as lost as soon as it has been silent that long."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )
    from prefect.exceptions import ObjectNotFound

    try:
        run_id = UUID(flow_run_id)
    except ValueError:  # a record written outside a flow run
        return False
    since = datetime.now(UTC) - timedelta(seconds=silent_after_s)
    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(run_id).state
        except ObjectNotFound:
            return False
        if state is None or state.type.value not in OWNER_ALIVE:
            return False
        if state.timestamp >= since:
            return True
        beats = client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=[ALIVE_EVENT]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            ),
            limit=1,
        )
    return bool(beats.events)


@task(name="wait for the run computing this job", **io_task_options())
def wait_for_owner(job_id: str, owner: str) -> dict[str, Any] | None:
    """Wait while ``owner`` computes ``job_id``; return the finished record, or None when the
    owner ended without one (failed, cancelled, crashed, lost): then this run takes over."""
    settings = get_settings()
    get_run_logger().info(
        "job %s is being computed by flow run %s; waiting for its result", job_id, owner
    )
    while True:
        if done := find_completed_job.fn(job_id):
            return done
        if not run_is_alive(owner, settings.lost_run_after_s):
            # It may have completed between the two checks.
            return find_completed_job.fn(job_id)
        time.sleep(settings.duplicate_poll_s)


@task(name="end job record", **io_task_options())
def end_record(record: dict[str, Any], status: str, error: str | None) -> dict[str, Any]:
    ended = jobs.ended_record(record, status, error)
    get_storage().write_json(storage.record_path(record["job_id"]), ended)
    return ended


@task(name="write result", **io_task_options())
def write_result(job: Job, stylized: Stylized, record: dict[str, Any]) -> dict[str, Any]:
    """result.png, then the caller's ``output`` (+ ``<output>.json``), then the record marked
    completed - last, so "completed" always means every file is in place."""
    store = get_storage()
    store.write_bytes(storage.result_path(job.job_id), stylized.png)
    done = jobs.completed_record(record, stylized.summary)
    if job.output:
        write_output(store, job.output, stylized.png, done)
    store.write_json(storage.record_path(job.job_id), done)
    return done


@task(name="reuse finished job", **io_task_options())
def reuse_result(job: Job, record: dict[str, Any], flow_run_id: str | None) -> dict[str, Any]:
    """The finished job's record, marked reused; its result is copied to ``output`` too
    when this request asked for one."""
    store = get_storage()
    reused = {**record, "reused": True, "reused_by": flow_run_id, "output": job.output}
    if job.output:
        write_output(store, job.output, store.read_bytes(storage.result_path(job.job_id)), reused)
    return reused


def output_location(store: Storage, output: str) -> str:
    """A relative ``output`` is inside the storage root; absolute paths and URLs are kept."""
    if is_s3(output) or Path(output).is_absolute():
        return output
    return store.url(output)


def write_output(store: Storage, output: str, png: bytes, record: dict[str, Any]) -> str:
    """The result where the caller asked, in the format its extension names, with the
    record beside it as ``<output>.json``."""
    url = output_location(store, output)
    fmt = output_format(output)
    data = (
        png
        if fmt == "png"
        else engine.encode_image(Image.open(io.BytesIO(png)), fmt, {"job_id": record["job_id"]})
    )
    storage.write_bytes(url, data, store.settings)
    storage.write_bytes(f"{url}.json", jobs.record_json(record), store.settings)
    record["output"] = url
    return url


def record_run_end(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (failure, crash, cancellation): mark the run's job record with how it ended.

    Runs in the flow's process, or in the runner's when the runner had to kill the process
    (a cancel); idempotent, and it only touches a record this run still owns as "running".
    """
    status = jobs.CANCELLED if (state.is_cancelled() or state.is_cancelling()) else jobs.FAILED
    try:
        store = get_storage(get_settings())
        link = store.read_json(storage.run_link_path(str(flow_run.id)))
        if not link or not link.get("record"):
            return  # refused before it became a job, or never started
        record = store.read_json(link["record"])
        if not record or record.get("flow_run_id") != str(flow_run.id):
            return
        if record.get("status") != jobs.RUNNING:
            return
        store.write_json(link["record"], jobs.ended_record(record, status, state.message))
    except Exception:  # a hook must not turn a cancel into a crash
        logger.exception("could not mark the job record of flow run %s", flow_run.id)
