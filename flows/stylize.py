"""The ``stylize`` flow: one image, one or more styles, one result - validated, observable,
resumable, and never computed twice.

    validate inputs -> (finished before? reuse it) -> claim the job (computed by another run
    now? wait, reuse its result) -> stylize image -> write result -> publish summary

Deployment ``stylize/stylize`` (``deployments/prefect.yaml``), run by ``styledrop worker``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed, State

from flows.alive import keep_alive, state_before_false_reschedule
from flows.deployment import FLOW_NAME
from flows.jobs import CANCELLED, Job, JobRejected
from flows.naming import run_name
from flows.results import use_shared_result_storage
from flows.settings import get_settings
from flows.tasks.inputs import publish_input
from flows.tasks.records import (
    claim_job,
    end_record,
    find_completed_job,
    link_rejected_run,
    link_run_to_job,
    record_run_end,
    reuse_result,
    wait_for_owner,
    write_result,
)
from flows.tasks.summary import publish_summary
from flows.tasks.transfer import run_style_transfer
from flows.tasks.validate import validate_job


def _run_name() -> str:
    # The same readable name whoever started the run (inbox, S3, dashboard, API).
    return run_name(flow_run.parameters)


@flow(
    name=FLOW_NAME,
    flow_run_name=_run_name,
    # Infrastructure faults are retried task by task; a refused job must fail at once.
    retries=0,
    # A Completed run with a persisted result cannot be put back in the queue (Prefect's
    # HandleFlowTerminalStateTransitions): the lost-run automation can never run a finished
    # job again, whatever the order its events arrive in. The result is the small record,
    # kept under the storage root (flows/results.py) so any machine can read it.
    persist_result=True,
    result_serializer="json",
    on_failure=[record_run_end],
    on_crashed=[record_run_end],
    on_cancellation=[record_run_end],
)
def stylize(
    content: str,
    styles: list[str] | None = None,
    options: dict[str, Any] | None = None,
    output: str | None = None,
    force: bool = False,
    content_name: str | None = None,
) -> dict[str, Any] | State:
    """Stylise ``content`` (a local path or s3:// URL) in the given ``styles`` (gallery names,
    paths or URLs; default: the configured default style) and return the job record.

    ``options`` are StyleParams fields (blend weights: ``style_blend``); ``output`` is an
    extra place for the result (relative paths are inside the storage root) with the record
    beside it as ``<output>.json``. The same inputs and parameters are computed once: later
    submissions return the stored record marked ``reused`` unless ``force=True``.
    ``content_name`` is what messages call the content (the inbox sensor gives the path the
    file was dropped at, not the processing/ copy the run reads).
    """
    if (ended := state_before_false_reschedule()) is not None:
        return ended
    settings = get_settings()
    use_shared_result_storage(settings)
    with keep_alive(settings.heartbeat_s):
        return stylize_job(content, styles, options, output, force, content_name)


def stylize_job(
    content: str,
    styles: list[str] | None,
    options: dict[str, Any] | None,
    output: str | None,
    force: bool,
    content_name: str | None = None,
) -> dict[str, Any] | State:
    """The flow's steps, while the run tells the server it is alive."""
    settings = get_settings()
    run_id = flow_run.get_id()

    try:
        job = validate_job(
            content, styles or [settings.default_style], options or {}, output, content_name
        )
    except JobRejected as exc:
        link_rejected_run(run_id, str(exc))
        # Returned, not raised: the run's message is then the reason itself, without Prefect's
        # "Flow run encountered an exception: JobRejected:" in front.
        return Failed(message=str(exc))
    link_run_to_job(run_id, job.job_id)
    publish_input(job)

    if not force and (done := find_completed_job(job.job_id)):
        return reuse_and_summarise(job, done, run_id)

    # Another run may be computing this very job right now (submitted twice, the same photo
    # under two names, a retry): wait for it and reuse its result rather than compute it
    # again; take over if it ends without one.
    while isinstance(claim := claim_job(job, run_id, force), str):
        done = wait_for_owner(job.job_id, claim)
        if done and not force:
            return reuse_and_summarise(job, done, run_id)
    record = claim
    stylized = run_style_transfer(job, force)

    if stylized.cancelled:
        end_record(record, CANCELLED, "cancelled on request")
        return Cancelled(
            message=f"cancelled at step {stylized.summary['steps']} of "
            f"{stylized.summary['total_steps']}; resubmit to continue from the checkpoint"
        )
    record = write_result(job, stylized, record)
    publish_summary(record)
    return record


def reuse_and_summarise(job: Job, done: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    record = reuse_result(job, done, run_id)
    publish_summary(record)
    return record
