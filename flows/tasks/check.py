"""Step 1: check the inputs (flows/checks.py, the rules every way in shares), link this run to
its job for the dashboard, and show the job's photo beside its progress: a browser-sized copy
in the job's folder and an image artifact pointing at it, so the Prefect UI and the dashboard
show which photo a run is for, even after the original moved on (inbox -> archive) or lives in
a private bucket."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_image_artifact

import engine
from flows import storage
from flows.checks import check_job
from flows.jobs import Job, RunLink
from flows.naming import file_name
from flows.settings import Settings, get_settings
from flows.storage import Storage, get_storage
from flows.tasks.records import link_run
from flows.tasks.retry import io_task_options

# Long edge of the copy: big enough for the run page, small enough for a table thumbnail.
INPUT_SIDE = 768


@task(name="check inputs", **io_task_options())
def check_inputs(
    content: str,
    styles: list[str],
    options: Any,
    output: str | None,
    content_name: str | None,
    flow_run_id: str | None,
) -> Job:
    """The validated job (JobRejected, never retried, for bad input), linked to this run and
    with its photo shown."""
    settings = get_settings()
    store = get_storage(settings)
    job = check_job(content, styles, options, output, content_name, settings)
    link_run(store, flow_run_id, RunLink.to_job(job.job_id))
    show_input(job, store, settings)
    return job


def show_input(job: Job, store: Storage, settings: Settings) -> None:
    """Write `_jobs/<id>/input.jpg` once per job and link it from this run. Best effort: a run
    is not failed for want of a thumbnail."""
    rel = job.layout.input
    try:
        if not store.exists(rel):
            image = engine.load_image(
                storage.read_bytes(job.content, settings), max_pixels=settings.max_pixels
            )
            image.thumbnail((INPUT_SIDE, INPUT_SIDE))
            store.write_bytes(rel, engine.encode_image(image, "jpeg", {"job_id": job.job_id}))
        create_image_artifact(
            image_url=store.public_url(rel),
            key=job.layout.input_key,
            description=file_name(job.content),
        )
    except Exception as exc:  # noqa: BLE001 - see docstring
        get_run_logger().warning("could not show the input photo: %s", exc)
