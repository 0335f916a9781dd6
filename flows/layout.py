"""Where everything lives under the storage root, and what Prefect artifacts are called: the
one home of every path and key, for the flow, the sensors, the dashboard and the benches.

    _jobs/<job_id>/result.png        canonical result
    _jobs/<job_id>/record.json       the job record (flows/jobs.py: JobRecord)
    _jobs/<job_id>/preview.jpg       latest preview (overwritten while the job runs)
    _jobs/<job_id>/input.jpg         browser-sized copy of the photo (the original may move)
    _jobs/<job_id>/checkpoint.pt     engine state to resume from
    _jobs/<job_id>/.claim.lock       the lock of a claim (local storage only)
    _runs/<flow_run_id>.json         which job a flow run works on (flows/jobs.py: RunLink)
    _uploads/<sha256[:16]>/<name>    dashboard uploads, under the name they were uploaded with
    _prefect_results/                Prefect's persisted flow results (flows/results.py)

Plain strings, no I/O: flows/storage.py reads and writes them.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

PREFECT_RESULTS = "_prefect_results"
UPLOADS = "_uploads"
_INPUT_KEY_SUFFIX = "-input"
# Characters kept in an uploaded file's stored name; anything else becomes "_".
_UNSAFE = re.compile(r"[^\w.\- ]+")


@dataclass(frozen=True)
class JobLayout:
    """The files and artifact keys of one job, ``_jobs/<job_id>/``."""

    job_id: str

    @property
    def folder(self) -> str:
        return f"_jobs/{self.job_id}"

    @property
    def result(self) -> str:
        return f"{self.folder}/result.png"

    @property
    def record(self) -> str:
        return f"{self.folder}/record.json"

    @property
    def preview(self) -> str:
        return f"{self.folder}/preview.jpg"

    @property
    def input(self) -> str:
        return f"{self.folder}/input.jpg"

    @property
    def checkpoint(self) -> str:
        return f"{self.folder}/checkpoint.pt"

    @property
    def claim_lock(self) -> str:
        """The lock file of a claim on local storage (a dot-file: never listed or served)."""
        return f"{self.folder}/.claim.lock"

    # Prefect artifact keys: one of each per job, so every run of a job shows the same ones.
    @property
    def progress_key(self) -> str:
        return f"job-{self.job_id}-progress"

    @property
    def preview_key(self) -> str:
        return f"job-{self.job_id}-preview"

    @property
    def input_key(self) -> str:
        return f"job-{self.job_id}{_INPUT_KEY_SUFFIX}"

    @property
    def summary_key(self) -> str:
        return f"job-{self.job_id}-summary"

    @staticmethod
    def is_input_key(key: str | None) -> bool:
        """Is this image artifact the job's photo (else it is its preview)?"""
        return bool(key) and str(key).endswith(_INPUT_KEY_SUFFIX)

    def download_name(self, ext: str) -> str:
        """What a downloaded file of this job is called: ``styledrop-<job id>.<ext>``."""
        return f"styledrop-{self.job_id}.{ext}"


def run_link_path(flow_run_id: str) -> str:
    return f"_runs/{flow_run_id}.json"


def all_records_glob() -> str:
    return JobLayout("*").record


def upload_path(data: bytes, name: str, ext: str) -> str:
    """`_uploads/<sha256[:16]>/<stem of name>.<ext>`: content-addressed (the same photo twice is
    stored once and keeps its job id) and named as the person named it, made safe for any
    storage."""
    ext = ext.lower().lstrip(".")
    stem = posixpath.basename(name.replace("\\", "/")).rsplit(".", 1)[0]
    stem = _UNSAFE.sub("_", stem).strip(" ._")[:80] or "photo"
    return f"{UPLOADS}/{hashlib.sha256(data).hexdigest()[:16]}/{stem}.{ext}"
