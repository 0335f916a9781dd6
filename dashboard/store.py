"""What the dashboard reads from and writes to the output storage, on top of `flows.storage`.

The layout is flows/layout.py's (`_runs/<flow_run_id>.json` points a run at `_jobs/<job_id>/`);
uploads from the Submit page go to `layout.upload_path`. Every failure becomes `StorageError`
with plain words; a missing file is not an error (None).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from flows.jobs import JobRecord, RunLink
from flows.layout import JobLayout, all_records_glob, run_link_path, upload_path
from flows.settings import Settings, get_settings
from flows.storage import Storage, filesystem, get_storage


class StorageError(Exception):
    """The output storage could not be read or written; str() is for people."""


@dataclass(frozen=True)
class JobFolder:
    """One job folder as the dashboard found it: where its files are, and its record (None
    while the job is young)."""

    layout: JobLayout
    record: JobRecord | None = None
    modified: datetime | None = None

    @property
    def finished(self) -> bool:
        """The flow marks a record completed only after result.png is written."""
        return self.record is not None and self.record.is_completed


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

    def read_record(self, layout: JobLayout) -> JobRecord | None:
        data = self.read_json(layout.record)
        if data is None:
            return None
        try:
            return JobRecord.model_validate(data)
        except ValidationError as exc:
            raise StorageError(f"{layout.record} is not a job record: {exc}") from exc

    def job_for_run(self, run_id: str) -> JobFolder | None:
        """The job a flow run works on, once the flow has written `_runs/<id>.json`."""
        link = RunLink.model_validate(self.read_json(run_link_path(run_id)) or {})
        if not link.job_id:
            return None
        layout = JobLayout(link.job_id)
        return JobFolder(layout, self.read_record(layout))

    def jobs(self, limit: int = 60) -> list[JobFolder]:
        """Jobs that have a record, most recently changed first."""
        pattern = f"{self.root.rstrip('/')}/{all_records_glob()}"
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
            layout = JobLayout(posixpath.basename(posixpath.dirname(path_in_fs)))
            record = self.read_record(layout)
            if record is not None:
                jobs.append(JobFolder(layout, record, modified))
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


def _modified(info: dict[str, Any]) -> datetime | None:
    """A listing entry's modification time, local (`mtime`) or S3 (`LastModified`)."""
    value = info.get("mtime", info.get("LastModified"))
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None
