"""The ``stylize`` flow: one image, one or more styles, one result - validated, observable,
resumable, and never computed twice.

    check inputs -> claim job (finished before, or computed by another run now? wait for it,
    reuse its result) -> stylize image -> save result (+ the run's summary)

Deployment ``stylize/stylize`` (``deployments/prefect.yaml``), run by ``styledrop worker``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed, State

from flows.alive import keep_alive, state_before_false_reschedule
from flows.deployment import FLOW_NAME
from flows.gallery import list_styles
from flows.jobs import JobRejected, JobStatus, RunLink
from flows.naming import run_name
from flows.options import StyleOptions, style_choice
from flows.results import use_shared_result_storage
from flows.settings import Settings, get_settings
from flows.storage import get_storage
from flows.tasks.check import check_inputs
from flows.tasks.records import (
    claim_job,
    end_record,
    link_run,
    record_run_end,
    reuse_result,
    save_result,
)
from flows.tasks.transfer import run_style_transfer

# The run form offers the gallery's styles as choices, as they are when the flow is imported
# (the worker registers the deployment's schema at start); any other path or URL is taken too.
StyleChoice = style_choice([style.name for style in list_styles(Settings().styles_dir)])
ALL_DEFAULTS = StyleOptions()


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
    # Options are checked by the flow itself (flows/options.py), so that a bad one is refused
    # with a reason in plain words rather than Prefect's parameter error.
    validate_parameters=False,
)
def stylize(
    content: str,
    styles: Sequence[StyleChoice] | None = (),  # type: ignore[valid-type]
    options: StyleOptions | None = ALL_DEFAULTS,  # type: ignore[valid-type]
    output: str | None = None,
    force: bool = False,
    content_name: str | None = None,
) -> dict[str, Any] | State:
    """Stylise one photo and return its job record. The same inputs and options are computed
    once: later submissions return the stored record marked ``reused``.

    The parameters' types and these descriptions are the deployment's run form in the Prefect
    UI. Callers may give ``options`` as a mapping of its field names (flows/options.py).

    Args:
        content: The photo: a file path on the worker's machine or an s3:// URL.
        styles: Gallery style names, or paths or URLs of style images; several are blended
            (see the options' style blend). Empty: the default style (STYLEDROP_DEFAULT_STYLE).
        options: How the result is made: its size, the number of steps, the weights.
        output: Also write the result here (ending in .png, .jpg or .webp; a relative path is
            inside the storage root), with its record beside it (the same name plus .json).
            None: only in the job's folder.
        force: Compute it again even if these inputs and options were done before.
        content_name: What messages call the photo (the inbox sensors give the path it was
            dropped at). None: its path.
    """
    if (ended := state_before_false_reschedule()) is not None:
        return ended
    settings = get_settings()
    use_shared_result_storage(settings)
    with keep_alive(settings.heartbeat_s):
        return stylize_job(content, styles, options, output, force, content_name)


def stylize_job(
    content: str,
    styles: Sequence[str] | None,
    options: Any,
    output: str | None,
    force: bool,
    content_name: str | None = None,
) -> dict[str, Any] | State:
    """The flow's steps, while the run tells the server it is alive."""
    settings = get_settings()
    run_id = flow_run.get_id()
    styles = list(styles or [settings.default_style])
    try:
        job = check_inputs(content, styles, options, output, content_name, run_id)
    except JobRejected as exc:
        link_run(get_storage(settings), run_id, RunLink.rejected(str(exc)))
        # Returned, not raised: the run's message is then the reason itself, without Prefect's
        # "Flow run encountered an exception: JobRejected:" in front.
        return Failed(message=str(exc))

    # Finished before, or being computed by another run right now (submitted twice, the same
    # photo under two names, a retry): reuse its result rather than compute it again.
    record = claim_job(job, run_id, force)
    if record.is_completed:
        return reuse_result(job, record, run_id).to_dict()

    stylized = run_style_transfer(job, force)
    if stylized.cancelled:
        end_record(record, JobStatus.CANCELLED, "cancelled on request")
        return Cancelled(
            message=f"cancelled at step {stylized.summary['steps']} of "
            f"{stylized.summary['total_steps']}; resubmit to continue from the checkpoint"
        )
    return save_result(job, stylized, record).to_dict()
