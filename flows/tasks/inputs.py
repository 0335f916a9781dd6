"""Show the job's photo beside its progress: a browser-sized copy in the job's folder and an
image artifact pointing at it, so the Prefect UI and the dashboard show which photo a run is
for, even after the original moved on (inbox -> archive) or lives in a private bucket."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_image_artifact
from prefect.cache_policies import NO_CACHE

import engine
from flows import storage
from flows.jobs import Job
from flows.naming import file_name
from flows.settings import get_settings
from flows.storage import get_storage
from flows.tasks.progress import input_key

# Long edge of the copy: big enough for the run page, small enough for a table thumbnail.
INPUT_SIDE = 768


@task(name="show input", cache_policy=NO_CACHE, persist_result=False)
def publish_input(job: Job) -> str | None:
    """Write `_jobs/<id>/input.jpg` once per job and link it from this run; returns its URL.
    Best effort: a run is not failed for want of a thumbnail."""
    settings = get_settings()
    store = get_storage(settings)
    rel = storage.input_path(job.job_id)
    try:
        if not store.exists(rel):
            image = engine.load_image(
                storage.read_bytes(job.content, settings), max_pixels=settings.max_pixels
            )
            image.thumbnail((INPUT_SIDE, INPUT_SIDE))
            store.write_bytes(rel, engine.encode_image(image, "jpeg", {"job_id": job.job_id}))
        url = store.public_url(rel)
        create_image_artifact(
            image_url=url, key=input_key(job.job_id), description=file_name(job.content)
        )
        return url
    except Exception as exc:  # noqa: BLE001 - see docstring
        get_run_logger().warning("could not show the input photo: %s", exc)
        return None
