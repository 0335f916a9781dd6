"""What a job is: its id, where its files live in storage, and its JSON record.

A job is identified by what decides its output image - the bytes of its inputs and its
normalised parameters - so the same request always maps to the same folder
``_jobs/<job_id>/``, whoever submits it and however often. That is what lets a resubmission
reuse a finished result or resume from a checkpoint instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.params import StyleParams
from flows.storage import preview_path, result_path

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"


class JobRejected(ValueError):
    """The job cannot be done as asked (not an image, too small, unknown style, bad option).
    The message is shown to the user as it is: what is wrong, then what to do about it.
    Retrying never helps, so it never is."""

    def __init__(self, reason: str, advice: str = "") -> None:
        self.reason, self.advice = reason, advice
        super().__init__(f"{reason}. {advice}." if advice else reason)


@dataclass
class StyleInput:
    requested: str  # what the caller gave: a gallery name, a path or a URL
    source: str  # where it was read from
    sha256: str


@dataclass
class Job:
    """A validated job: plain data handed from task to task (sources, never image bytes)."""

    job_id: str
    content: str
    content_sha256: str
    content_size: tuple[int, int]
    styles: list[StyleInput]
    params: dict[str, Any]  # StyleParams.to_dict()
    output: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def style_params(self) -> StyleParams:
        return StyleParams(**self.params)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


# --- the record ----------------------------------------------------------------------------


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_record(
    job: Job, flow_run_id: str, force: bool, worker: dict[str, str] | None = None
) -> dict[str, Any]:
    """The record written when a run starts working on a job (status "running"). ``worker``
    says where it runs (host, worker name): Prefect's worker label on a run can name a worker
    that lost the race to submit it, so the record is where to look."""
    return {
        "job_id": job.job_id,
        "status": RUNNING,
        "flow_run_id": flow_run_id,
        "worker": worker or {},
        "inputs": {
            "content": job.content,
            "content_sha256": job.content_sha256,
            "content_size": list(job.content_size),
            "styles": [asdict(s) for s in job.styles],
        },
        "params": job.params,
        "force": force,
        "output": job.output,
        "result": result_path(job.job_id),
        "preview": preview_path(job.job_id),
        "backbone": None,
        "device": None,
        "steps": 0,
        "total_steps": None,
        "steps_per_second": None,
        "resumed_from_step": 0,
        "stopped": None,
        "final_loss": None,
        "timings": {"started_at": now(), "finished_at": None, "engine_s": None},
        "versions": {},
        "error": None,
    }


def completed_record(record: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """``record`` after the engine finished, from ``StyleResult.summary()``."""
    done = dict(record)
    for key in (
        "backbone",
        "device",
        "steps",
        "total_steps",
        "steps_per_second",
        "resumed_from_step",
        "stopped",
        "final_loss",
        "versions",
    ):
        done[key] = summary.get(key)
    done["status"] = COMPLETED
    done["timings"] = {
        **record["timings"],
        "finished_at": now(),
        "engine_s": summary.get("seconds"),
    }
    return done


def ended_record(record: dict[str, Any], status: str, error: str | None) -> dict[str, Any]:
    """``record`` for a run that stopped without a result (failed or cancelled)."""
    return {
        **record,
        "status": status,
        "error": error,
        "timings": {**record["timings"], "finished_at": now()},
    }


def is_completed(record: dict[str, Any] | None) -> bool:
    return bool(record) and record.get("status") == COMPLETED


def record_json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=2, default=str).encode()
