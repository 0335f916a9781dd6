"""The engine's per-step callback, turned into what a person watching a job needs: a progress
artifact, preview images, checkpoints to resume from, and a prompt stop on cancel.

The engine calls back after every step (milliseconds apart on a GPU), so each side effect has
its own throttle and the callback itself is a few clock reads. The side effects are best
effort: a storage or API hiccup is logged and retried at the next interval instead of
failing an hour of optimisation.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import torch
from prefect.artifacts import (
    create_image_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate

import engine
from flows import handback
from flows.layout import JobLayout
from flows.settings import Settings
from flows.storage import Storage

CHECKPOINT_FORMAT = "styledrop.flow.checkpoint/1"


class Every:
    """True at most once per ``seconds`` (the first call starts the clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False


def progress_text(p: engine.Progress) -> str:
    return (
        f"step {p.step}/{p.total_steps} (scale {p.scale + 1}/{p.n_scales}), "
        f"loss {p.loss:.4g}, {p.elapsed_s:.0f} s"
    )


class JobMonitor:
    """Callable handed to ``engine.stylize(callback=...)`` for one job."""

    def __init__(
        self,
        job_id: str,
        flow_run_id: str | None,
        store: Storage,
        settings: Settings,
        logger: logging.Logger | logging.LoggerAdapter,
    ) -> None:
        self.job_id = job_id
        self.layout = JobLayout(job_id)
        self.flow_run_id = flow_run_id
        self.store = store
        self.settings = settings
        self.logger = logger
        self.progress_due = Every(settings.progress_interval_s)
        self.cancel_due = Every(settings.cancel_poll_s)
        self.checkpoint_due = Every(settings.checkpoint_interval_s)
        self.last_preview_step = 0
        self.logged_tenth = 0  # progress lines in the run's log at every 10%
        self.preview_artifact: Any = None
        self.cancel_requested = False
        self.progress_artifact = create_progress_artifact(
            progress=0.0, key=self.layout.progress_key, description="waiting for the first step"
        )

    def __call__(self, progress: engine.Progress) -> bool | None:
        if handback.requested():
            self.park(progress)
        if self.progress_due.due():
            self.report(progress)
        if (tenth := int(progress.fraction * 10)) > self.logged_tenth:
            self.logged_tenth = tenth
            self.logger.info("%d%% done: %s", 10 * tenth, progress_text(progress))
        if progress.step - self.last_preview_step >= self.settings.preview_every:
            self.last_preview_step = progress.step
            self.write_preview(progress)
        if self.checkpoint_due.due():
            self.write_checkpoint(progress)
        if self.cancel_due.due() and self.cancelling():
            self.logger.info("cancel requested at %s: stopping", progress_text(progress))
            self.cancel_requested = True
            # Keep the work done so far: a resubmission continues from here.
            self.write_checkpoint(progress)
            return engine.STOP
        return None

    def park(self, progress: engine.Progress) -> None:
        """Checkpoint, then wait for the worker to hand the run back (flows/handback.py)."""
        self.logger.info(
            "worker stopping at %s: checkpoint, then handed back", progress_text(progress)
        )
        self.write_checkpoint(progress)
        handback.park(str(self.flow_run_id))

    # --- side effects ----------------------------------------------------------------------

    def report(self, progress: engine.Progress) -> None:
        self.set_progress(100.0 * progress.fraction, progress_text(progress))

    def report_done(self, result: engine.StyleResult) -> None:
        """Final progress: 100 when the image is done, where it stopped when cancelled."""
        if result.stopped == "cancelled":
            percent = 100.0 * result.steps / max(result.total_steps, 1)
            self.set_progress(percent, f"cancelled at step {result.steps}/{result.total_steps}")
        else:
            self.set_progress(
                100.0,
                f"done: {result.steps} steps in {result.seconds:.0f} s "
                f"({result.steps_per_second:.2f} steps/s)",
            )

    def set_progress(self, percent: float, description: str) -> None:
        try:
            update_progress_artifact(
                self.progress_artifact, progress=min(percent, 100.0), description=description
            )
        except Exception as exc:  # noqa: BLE001 - best effort, see module docstring
            self.logger.warning("progress update failed: %s", exc)

    def write_preview(self, progress: engine.Progress) -> None:
        try:
            data = engine.encode_image(
                progress.preview(), "jpeg", {"job_id": self.job_id, "step": progress.step}
            )
            rel = self.layout.preview
            self.store.write_bytes(rel, data)
            self.show_preview(rel, progress)
        except Exception as exc:  # noqa: BLE001
            self.logger.warning("preview at step %d failed: %s", progress.step, exc)

    def show_preview(self, rel: str, progress: engine.Progress) -> None:
        """One image artifact per run pointing at the (overwritten) preview file; later
        previews only update its description, so the UI keeps one entry per run."""
        caption = f"Preview at {progress_text(progress)}"
        if self.preview_artifact is None:
            self.preview_artifact = create_image_artifact(
                image_url=self.store.public_url(rel),
                key=self.layout.preview_key,
                description=caption,
            )
            return
        with get_client(sync_client=True) as client:
            client.update_artifact(self.preview_artifact, ArtifactUpdate(description=caption))

    def write_checkpoint(self, progress: engine.Progress) -> None:
        try:
            buffer = io.BytesIO()
            torch.save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "job_id": self.job_id,
                    "flow_run_id": self.flow_run_id,
                    "step": progress.step,
                    "engine": progress.checkpoint(),
                },
                buffer,
            )
            self.store.write_bytes(self.layout.checkpoint, buffer.getvalue())
            self.logger.info("checkpoint at %s", progress_text(progress))
        except Exception as exc:  # noqa: BLE001
            self.logger.warning("checkpoint at step %d failed: %s", progress.step, exc)

    def cancelling(self) -> bool:
        """Has someone asked (UI, API) to cancel this flow run?"""
        if self.flow_run_id is None:
            return False
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(self.flow_run_id).state
        except Exception as exc:  # noqa: BLE001
            self.logger.warning("cannot check for a cancel request: %s", exc)
            return False
        return state is not None and (state.is_cancelling() or state.is_cancelled())


def load_checkpoint(
    store: Storage,
    job_id: str,
    flow_run_id: str | None,
    force: bool,
    logger: logging.Logger | logging.LoggerAdapter,
) -> dict[str, Any] | None:
    """The engine state to resume from, or None to start fresh.

    ``force`` asks for a fresh computation, so an earlier run's checkpoint is ignored - but a
    checkpoint this very flow run wrote (it crashed and is being retried) is still used.
    """
    rel = JobLayout(job_id).checkpoint
    try:
        data = store.read_bytes(rel)
    except FileNotFoundError:
        return None
    try:
        # weights_only: a checkpoint is tensors and plain values; never unpickle code from
        # a storage others may write to.
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: start over
        logger.warning("ignoring unreadable checkpoint %s: %s", rel, exc)
        return None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        logger.warning("ignoring %s: not a styledrop checkpoint", rel)
        return None
    if force and saved.get("flow_run_id") != flow_run_id:
        logger.info(
            "force=True: not resuming from the checkpoint of run %s", saved.get("flow_run_id")
        )
        return None
    logger.info("resuming from the checkpoint at step %s", saved.get("step"))
    return saved["engine"]
