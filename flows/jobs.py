"""What a job is: its id, its validated inputs, and its record.

A job is identified by what decides its output image - the bytes of its inputs and its
normalised parameters - so the same request always maps to the same folder
``_jobs/<job_id>/`` (flows/layout.py), whoever submits it and however often. That is what lets a
resubmission reuse a finished result or resume from a checkpoint instead of starting over.

``JobRecord`` is the one schema of ``record.json``: written by the flow, read by the flow, the
dashboard, the benches and people. No Prefect import here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.params import StyleParams
from flows.layout import JobLayout


class JobRejected(ValueError):
    """The job cannot be done as asked (not an image, too small, unknown style, bad option).
    The message is shown to the user as it is: what is wrong, then what to do about it.
    Retrying never helps, so it never is."""

    def __init__(self, reason: str, advice: str = "") -> None:
        self.reason, self.advice = reason, advice
        super().__init__(f"{reason}. {advice}." if advice else reason)


class JobStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


def timestamp() -> str:
    """Now, as records and notes write it: UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class StyleInput(BaseModel):
    requested: str  # what the caller gave: a gallery name, a path or a URL
    source: str  # where it was read from
    sha256: str


class Job(BaseModel):
    """A validated job: plain data handed from step to step (sources, never image bytes)."""

    job_id: str
    content: str
    content_sha256: str
    content_size: tuple[int, int]
    styles: list[StyleInput]
    params: dict[str, Any]  # StyleParams.to_dict()
    output: str | None = None

    @property
    def style_params(self) -> StyleParams:
        return StyleParams(**self.params)

    @property
    def layout(self) -> JobLayout:
        return JobLayout(self.job_id)


class JobInputs(BaseModel):
    content: str
    content_sha256: str
    content_size: tuple[int, int]
    styles: list[StyleInput]


class Timings(BaseModel):
    started_at: str
    finished_at: str | None = None
    engine_s: float | None = None


# What the engine's StyleResult.summary() says that the record keeps.
_ENGINE_FIELDS = (
    "backbone",
    "device",
    "steps",
    "total_steps",
    "steps_per_second",
    "resumed_from_step",
    "stopped",
    "final_loss",
    "versions",
)


class JobRecord(BaseModel):
    """``_jobs/<job_id>/record.json``. Unknown keys (an older or newer writer) are ignored."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    status: JobStatus
    flow_run_id: str = ""
    # Where it ran (host, Prefect worker name): a run's worker label can name a worker that
    # lost the race to submit it, so the record is where to look.
    worker: dict[str, str] = Field(default_factory=dict)
    inputs: JobInputs
    params: dict[str, Any]
    force: bool = False
    output: str | None = None
    result: str = ""
    preview: str = ""
    backbone: str | None = None
    device: str | None = None
    steps: int = 0
    total_steps: int | None = None
    steps_per_second: float | None = None
    resumed_from_step: int = 0
    stopped: str | None = None
    final_loss: float | None = None
    timings: Timings
    versions: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    reused: bool = False  # this run found the job done and reused its result
    reused_by: str | None = None

    @classmethod
    def start(
        cls, job: Job, flow_run_id: str, force: bool, worker: dict[str, str] | None = None
    ) -> JobRecord:
        """The record written when a run starts working on a job."""
        return cls(
            job_id=job.job_id,
            status=JobStatus.RUNNING,
            flow_run_id=flow_run_id,
            worker=worker or {},
            inputs=JobInputs(**job.model_dump(include=set(JobInputs.model_fields))),
            params=job.params,
            force=force,
            output=job.output,
            result=job.layout.result,
            preview=job.layout.preview,
            timings=Timings(started_at=timestamp()),
        )

    def completed(self, summary: dict[str, Any]) -> JobRecord:
        """This record after the engine finished, from ``StyleResult.summary()``."""
        timings = self.timings.model_copy(
            update={"finished_at": timestamp(), "engine_s": summary.get("seconds")}
        )
        engine = {key: summary.get(key) for key in _ENGINE_FIELDS}
        engine["versions"] = engine["versions"] or {}
        return self.model_copy(
            update={**engine, "status": JobStatus.COMPLETED, "timings": timings}
        )

    def ended(self, status: JobStatus, error: str | None) -> JobRecord:
        """This record for a run that stopped without a result (failed or cancelled)."""
        timings = self.timings.model_copy(update={"finished_at": timestamp()})
        return self.model_copy(update={"status": status, "error": error, "timings": timings})

    def reused_for(self, flow_run_id: str | None, output: str | None) -> JobRecord:
        return self.model_copy(update={"reused": True, "reused_by": flow_run_id, "output": output})

    @property
    def is_completed(self) -> bool:
        return self.status is JobStatus.COMPLETED

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data (the flow's result)."""
        return self.model_dump(mode="json")


class RunLink(BaseModel):
    """``_runs/<flow_run_id>.json``: the job a flow run works on, or why it was refused."""

    job_id: str | None = None
    record: str | None = None  # the job record's path
    status: str | None = None  # "rejected" for a refused run
    error: str | None = None

    @classmethod
    def to_job(cls, job_id: str) -> RunLink:
        return cls(job_id=job_id, record=JobLayout(job_id).record)

    @classmethod
    def rejected(cls, reason: str) -> RunLink:
        return cls(status="rejected", error=reason)


@dataclass(frozen=True)
class Claim:
    """What claiming a job gave this run: the job's record to compute it under (``record``),
    or the id of the run that computes it now or has finished it (``owner``), to wait for."""

    record: JobRecord | None = None
    owner: str = ""


# --- identity ------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalised_params(params: StyleParams, n_styles: int) -> dict[str, Any]:
    """The parameters as they decide the image: blend weights scaled to sum to 1 (None means
    equal), so ``[1, 1]`` and ``[0.5, 0.5]`` are the same job."""
    data = params.to_dict()
    blend = params.style_blend or [1.0] * n_styles
    total = sum(blend)
    data["style_blend"] = [round(w / total, 6) for w in blend]
    for name in ("content_weight", "style_weight", "tv_weight", "style_scale"):
        data[name] = float(data[name])
    return data


def compute_job_id(content_sha256: str, style_sha256s: list[str], params: StyleParams) -> str:
    """First 16 hex chars of sha256(content bytes' hash, style bytes' hashes in order,
    normalised params)."""
    key = {
        "content": content_sha256,
        "styles": style_sha256s,
        "params": normalised_params(params, len(style_sha256s)),
    }
    return sha256(json.dumps(key, sort_keys=True).encode())[:16]
