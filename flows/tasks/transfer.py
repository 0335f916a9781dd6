"""Step 2: run the engine on a validated job, resuming from its checkpoint when there is one.

Images are decoded inside this task and the result leaves it PNG-encoded: no tensors or PIL
images cross a task boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import flow_run

import engine
from flows import storage
from flows.jobs import Job, JobRejected, sha256
from flows.settings import Settings, get_settings
from flows.storage import get_storage
from flows.tasks.progress import JobMonitor, load_checkpoint
from flows.tasks.retry import io_task_options


@dataclass
class Stylized:
    """What the engine produced, as plain data."""

    png: bytes
    summary: dict[str, Any]  # StyleResult.summary()
    cancelled: bool


@task(name="stylize image", **io_task_options())
def run_style_transfer(job: Job, force: bool) -> Stylized:
    """Optimise the image; progress, previews and checkpoints go out while it runs, and a
    cancel request stops it within ``settings.cancel_poll_s`` (plus one step)."""
    settings = get_settings()
    logger = get_run_logger()
    store = get_storage(settings)
    run_id = flow_run.get_id()
    content = read_image(job.content, job.content_sha256, settings)
    styles = [read_image(s.source, s.sha256, settings) for s in job.styles]
    resume = load_checkpoint(store, job.job_id, run_id, force, logger)
    monitor = JobMonitor(job.job_id, run_id, store, settings, logger)

    def run(resume_from: dict[str, Any] | None) -> engine.StyleResult:
        try:
            return engine.stylize(
                content,
                styles,
                job.style_params,
                device=settings.device,
                backbone=settings.backbone,
                weights=settings.weights,
                cpu_bf16=settings.cpu_bf16,
                callback=monitor,
                resume=resume_from,
            )
        except engine.ParamError as exc:
            if resume_from is None:
                raise JobRejected(str(exc)) from exc  # e.g. the size does not fit in memory
            raise

    try:
        result = run(resume)
    except engine.ParamError as exc:
        # The checkpoint no longer fits this job (engine upgrade, other backbone): start over.
        logger.warning("cannot resume (%s); starting from the beginning", exc)
        result = run(None)
    monitor.report_done(result)
    png = engine.encode_image(result.image, "png", {"job_id": job.job_id, **result.summary()})
    return Stylized(png=png, summary=result.summary(), cancelled=result.stopped == "cancelled")


def read_image(source: str, expected_sha256: str, settings: Settings) -> Any:
    """Decode an input again, refusing one that changed since it was validated: the job id
    (and any checkpoint) belongs to the bytes that were validated."""
    data = storage.read_bytes(source, settings)
    if sha256(data) != expected_sha256:
        raise JobRejected(f"{source} changed after the job was submitted; submit it again")
    return engine.load_image(data, max_pixels=settings.max_pixels)
