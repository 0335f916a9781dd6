"""What the dashboard reads from and writes to the output storage, on top of `flows.storage`.

Layout (ARCHITECTURE.md): `_runs/<flow_run_id>.json` points a run at `_jobs/<job_id>/`, which
holds result.png, record.json and preview.jpg. Uploads from the Submit page go to
`_uploads/<sha256[:16]>/<their name>.<ext>`: content-addressed, so submitting the same photo
twice stores it once and the flow's job id (a hash of the inputs) stays stable, and named as
the person named the file, so every run of it shows that name (flows/naming.py).

Every failure becomes `StorageError` with plain words; a missing file is not an error (None).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flows.settings import Settings, get_settings
from flows.storage import (
    UPLOADS,
    Storage,
    filesystem,
    get_storage,
    input_path,
    job_dir,
    preview_path,
    record_path,
    result_path,
    run_link_path,
)

# Characters kept in an uploaded file's stored name; anything else becomes "_".
_UNSAFE = re.compile(r"[^\w.\- ]+")


class StorageError(Exception):
    """The output storage could not be read or written; str() is for people."""


@dataclass(frozen=True)
class JobFolder:
    """One job folder: its record (may be empty while the job is young) and where its files are."""

    job_id: str
    record: dict[str, Any]
    modified: datetime | None = None

    @property
    def folder(self) -> str:
        return job_dir(self.job_id)

    @property
    def result_rel(self) -> str:
        return result_path(self.job_id)

    @property
    def preview_rel(self) -> str:
        return preview_path(self.job_id)

    @property
    def input_rel(self) -> str:
        return input_path(self.job_id)

    @property
    def record_rel(self) -> str:
        return record_path(self.job_id)

    @property
    def status(self) -> str:
        """running, completed, failed or cancelled (flows/jobs.py); "" before the first write."""
        return str(self.record.get("status") or "")

    @property
    def finished(self) -> bool:
        """The flow marks a record completed only after result.png is written."""
        return self.status == "completed"

    def download_name(self, ext: str) -> str:
        """What a downloaded file of this job is called: ``styledrop-<job id>.<ext>``."""
        return f"styledrop-{self.job_id}.{ext}"

    def record_text(self) -> str:
        return json.dumps(self.record, indent=2)

    @property
    def backbone(self) -> str:
        """What the engine really used, e.g. "vgg19-imagenet" or "random(seed=0)"."""
        return str(self.record.get("backbone") or "")


def _failed(what: str, root: str, exc: BaseException) -> StorageError:
    return StorageError(f"Could not {what} in the output storage ({root}): {exc}")


class DashboardStore:
    def __init__(self, storage: Storage | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.storage = storage or get_storage(self.settings)

    @property
    def root(self) -> str:
        return self.storage.root

    # --- reads ----------------------------------------------------------------------------
    def read(self, rel: str) -> bytes | None:
        """Bytes at `rel`, or None when there is no such file."""
        try:
            return self.storage.read_bytes(rel)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any backend error becomes a message
            raise _failed(f"read {rel}", self.root, exc) from exc

    def read_json(self, rel: str) -> dict[str, Any] | None:
        data = self.read(rel)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise StorageError(f"{rel} in the output storage is not valid JSON: {exc}") from exc
        return value if isinstance(value, dict) else None

    def read_location(self, location: str) -> bytes | None:
        """Bytes of a run's input given as the flow got it, when it lies in this storage (an
        upload); None for anything elsewhere, which the dashboard does not go and read."""
        rel = self.storage.relative(location)
        return self.read(rel) if rel is not None else None

    def job_for_run(self, run_id: str) -> JobFolder | None:
        """The job a flow run works on, once the flow has written `_runs/<id>.json`."""
        link = self.read_json(run_link_path(run_id))
        if not link or not link.get("job_id"):
            return None
        job_id = str(link["job_id"])
        record_rel = str(link.get("record") or record_path(job_id))
        return JobFolder(job_id=job_id, record=self.read_json(record_rel) or {})

    def jobs(self, limit: int = 60) -> list[JobFolder]:
        """Jobs that have a record, most recently changed first."""
        pattern = f"{self.root.rstrip('/')}/{record_path('*')}"
        try:
            fs, path = filesystem(pattern, self.settings)
            found = fs.glob(path, detail=True)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001
            raise _failed("list the jobs", self.root, exc) from exc
        entries = sorted(
            ((p, _modified(info)) for p, info in found.items()),
            key=lambda e: e[1] or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )[:limit]
        jobs = []
        for path_in_fs, modified in entries:
            job_id = posixpath.basename(posixpath.dirname(path_in_fs))
            record = self.read_json(record_path(job_id))
            if record is not None:
                jobs.append(JobFolder(job_id=job_id, record=record, modified=modified))
        return jobs

    def public_url(self, rel: str) -> str:
        try:
            return self.storage.public_url(rel)
        except Exception as exc:  # noqa: BLE001 - presigning can fail on bad credentials
            raise _failed(f"make a link for {rel}", self.root, exc) from exc

    # --- writes ---------------------------------------------------------------------------
    def save_upload(self, data: bytes, name: str, ext: str) -> str:
        """Store an uploaded image under its own name; returns its location (local path or
        s3:// URL) for the flow."""
        rel = upload_path(data, name, ext)
        try:
            if not self.storage.exists(rel):  # same bytes, same name: write once
                self.storage.write_bytes(rel, data)
            return self.storage.url(rel)
        except Exception as exc:  # noqa: BLE001
            raise _failed("save the upload", self.root, exc) from exc


def upload_path(data: bytes, name: str, ext: str) -> str:
    """`_uploads/<sha256[:16]>/<stem of name>.<ext>`, the name made safe for any storage."""
    ext = ext.lower().lstrip(".")
    stem = posixpath.basename(name.replace("\\", "/")).rsplit(".", 1)[0]
    stem = _UNSAFE.sub("_", stem).strip(" ._")[:80] or "photo"
    return f"{UPLOADS}/{hashlib.sha256(data).hexdigest()[:16]}/{stem}.{ext}"


def _modified(info: dict[str, Any]) -> datetime | None:
    """A listing entry's modification time, local (`mtime`) or S3 (`LastModified`)."""
    value = info.get("mtime", info.get("LastModified"))
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None
