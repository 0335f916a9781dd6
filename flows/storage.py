"""Reading inputs and writing results: local folders and S3 behind one small interface.

One storage root (``settings.storage_root``: a local folder or ``s3://bucket/prefix``) holds
every job's files; inputs and ``output=`` targets may be anywhere fsspec can reach (a local
path or an ``s3://`` URL). Writes are atomic so a reader (the dashboard, a sensor, a resumed
run) never sees half a file: locally a hidden temporary file is renamed over the target; on S3
an object only becomes visible once its upload has completed.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fsspec
from fsspec.core import url_to_fs

from engine.images import write_atomic
from flows import links
from flows.settings import Settings, get_settings


def is_s3(url: str) -> bool:
    return url.startswith(("s3://", "s3a://"))


def s3_options(settings: Settings) -> dict[str, Any]:
    """s3fs arguments from the settings. Empty key/secret: the standard AWS credential chain.
    The region comes from AWS_DEFAULT_REGION (s3fs ignores a region in client_kwargs here)."""
    options: dict[str, Any] = {
        # Other processes (resumed runs, the dashboard) write the same keys: never answer
        # "exists?" from a stale listing.
        "use_listings_cache": False,
    }
    if settings.s3_endpoint_url:
        options["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_key:
        options["key"] = settings.s3_key
    if settings.s3_secret:
        options["secret"] = settings.s3_secret.get_secret_value()
    return options


def filesystem(url: str, settings: Settings | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` and the path inside it."""
    settings = settings or get_settings()
    options = s3_options(settings) if is_s3(url) else {}
    return url_to_fs(url, **options)


def read_bytes(url: str, settings: Settings | None = None) -> bytes:
    """Whole contents of a local path or an s3:// URL."""
    fs, path = filesystem(url, settings)
    return fs.cat_file(path)


def exists(url: str, settings: Settings | None = None) -> bool:
    fs, path = filesystem(url, settings)
    return fs.exists(path)


def write_bytes(url: str, data: bytes, settings: Settings | None = None) -> None:
    """Write ``data`` to a local path or an s3:// URL so that readers see either the old
    contents or the new, never a partial file."""
    if is_s3(url):
        fs, path = filesystem(url, settings)
        # One PUT (or a multipart upload for big files): the object appears only when complete.
        fs.pipe_file(path, data)
        return
    write_atomic(url.removeprefix("file://"), data)


def join(root: str, rel: str) -> str:
    """``root`` + a relative path written with forward slashes."""
    return f"{root.rstrip('/')}/{check_relative(rel)}"


def check_relative(rel: str) -> str:
    """Refuse paths that would leave the storage root."""
    norm = posixpath.normpath(rel.replace("\\", "/")).lstrip("/")
    if norm in ("", ".") or norm == ".." or norm.startswith("../"):
        raise ValueError(f"not a path inside the storage root: {rel!r}")
    return norm


class Storage:
    """The output storage root. Paths given to its methods are relative to the root."""

    def __init__(self, root: str, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.root = root.rstrip("/") if is_s3(root) else str(Path(root).resolve())
        self.is_s3 = is_s3(root)

    def url(self, rel: str) -> str:
        """Where ``rel`` lives, as a local path or an s3:// URL."""
        return join(self.root, rel)

    def exists(self, rel: str) -> bool:
        return exists(self.url(rel), self.settings)

    def read_bytes(self, rel: str) -> bytes:
        return read_bytes(self.url(rel), self.settings)

    def write_bytes(self, rel: str, data: bytes) -> str:
        url = self.url(rel)
        write_bytes(url, data, self.settings)
        return url

    def read_json(self, rel: str) -> dict[str, Any] | None:
        """The JSON object at ``rel``, or None when there is none."""
        try:
            return json.loads(self.read_bytes(rel))
        except FileNotFoundError:
            return None

    def write_json(self, rel: str, data: dict[str, Any]) -> str:
        return self.write_bytes(rel, json.dumps(data, indent=2, default=str).encode())

    def relative(self, url: str) -> str | None:
        """``url`` relative to the root, or None when it lies elsewhere."""
        if self.is_s3:
            prefix = self.root + "/"
            return url[len(prefix) :] if url.startswith(prefix) else None
        try:
            return Path(url.removeprefix("file://")).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def public_url(self, rel: str) -> str:
        """A URL a browser can open, valid for ``settings.presign_expiry_s``: a signed link
        to the dashboard's read-only file route for local storage (``flows.links``), a
        presigned GET URL for S3."""
        rel = check_relative(rel)
        lifetime = self.settings.presign_expiry_s
        if self.is_s3:
            fs, path = filesystem(self.url(rel), self.settings)
            return fs.sign(path, expiration=lifetime)
        query = links.signed_query(links.link_key(self.settings), rel, lifetime)
        return f"{self.settings.files_url}/{quote(rel)}?{query}"


def get_storage(settings: Settings | None = None) -> Storage:
    """The configured output storage (``settings.storage_root``)."""
    settings = settings or get_settings()
    return Storage(settings.storage_root, settings)


def public_url(rel: str, settings: Settings | None = None) -> str:
    """Browser URL of ``rel`` (relative to the storage root); see ``Storage.public_url``."""
    return get_storage(settings).public_url(rel)


def is_infrastructure_fault(exc: BaseException) -> bool:
    """True for errors that retrying may cure (storage, network or the Prefect API unreachable
    or overloaded, timeouts); False for a missing file or a refused permission, which no retry
    will fix."""
    import httpx

    permanent = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
    if isinstance(exc, permanent):
        return False
    if isinstance(exc, httpx.HTTPStatusError):
        # The Prefect API's 503 "database is locked" under a burst, a server restarting.
        return exc.response.status_code >= 500
    if isinstance(exc, httpx.TransportError):
        return True
    transient: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)
    try:  # botocore's connection/timeout errors do not derive from OSError
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        transient += (BotoConnectionError, HTTPClientError)
    except ImportError:  # pragma: no cover - s3fs always brings botocore
        pass
    return isinstance(exc, transient)
