"""The inbox areas (inbox/, processing/, archive/, failed/, outputs/) under one root, a local
folder or an S3 bucket + prefix, behind the few operations the life cycle needs.

Moves never overwrite: callers pick a free name first (``free_name``). On S3 a move is a
server-side copy followed by deleting the source: the copy comes first, so a crash between the
two leaves the object in both places (found again and deduplicated by the idempotency key),
never in neither.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable, Iterable

from flows.sensors.convention import with_suffix_number
from flows.settings import Settings, get_settings
from flows.storage import filesystem, is_s3, write_bytes

INBOX, PROCESSING, ARCHIVE, FAILED, OUTPUTS = "inbox", "processing", "archive", "failed", "outputs"


class InboxStore:
    def __init__(self, root: str, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.is_s3 = is_s3(root)
        self.root = root.rstrip("/") if self.is_s3 else os.path.abspath(root)
        self.fs, self._base = filesystem(self.root, self.settings)
        self._base = self._base.rstrip("/")

    # --- naming ---------------------------------------------------------------------------
    def url(self, area: str, rel: str = "") -> str:
        """A local absolute path or an s3:// URL (what the flow is given)."""
        tail = f"{area}/{rel}" if rel else area
        return f"{self.root}/{tail}"

    def _path(self, area: str, rel: str = "") -> str:
        return posixpath.join(self._base, area, rel) if rel else posixpath.join(self._base, area)

    # --- reading --------------------------------------------------------------------------
    def exists(self, area: str, rel: str) -> bool:
        return self.fs.isfile(self._path(area, rel))

    def list(self, area: str) -> list[str]:
        """Every file under ``area`` (recursively), relative to it, sorted."""
        top = self._path(area)
        try:
            found = self.fs.find(top)
        except FileNotFoundError:
            return []
        prefix = top.rstrip("/") + "/"
        rels = [p[len(prefix) :] for p in found if p.startswith(prefix)]
        # S3 "folder" placeholder objects end in a slash; they are not files.
        return sorted(r for r in rels if r and not r.endswith("/"))

    def names(self, area: str, folder: str = "") -> list[str]:
        """Names of the files directly in ``area/folder`` (not recursive)."""
        top = self._path(area, folder)
        try:
            entries = self.fs.ls(top, detail=True)
        except FileNotFoundError:
            return []
        return sorted(
            posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file"
        )

    def read_bytes(self, area: str, rel: str) -> bytes:
        return self.fs.cat_file(self._path(area, rel))

    def sha256(self, area: str, rel: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(self._path(area, rel), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    # --- writing --------------------------------------------------------------------------
    def write_bytes(self, area: str, rel: str, data: bytes) -> None:
        """Atomic: readers (and a restarted sensor) see the old or the new file, never half."""
        write_bytes(self.url(area, rel), data, self.settings)

    def move(self, area: str, rel: str, to_area: str, to_rel: str) -> None:
        """Move a file between areas; FileNotFoundError when the source is gone (someone else
        took it), which callers treat as "not mine"."""
        src, dst = self._path(area, rel), self._path(to_area, to_rel)
        if self.is_s3:
            self.fs.copy(src, dst)  # raises FileNotFoundError for a missing source
            self.fs.rm(src)
            return
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(src, dst)  # same filesystem: atomic
        self._prune_empty_parents(area, rel)

    def copy(self, area: str, rel: str, to_area: str, to_rel: str) -> None:
        src, dst = self._path(area, rel), self._path(to_area, to_rel)
        if not self.is_s3:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
        self.fs.copy(src, dst)

    def _prune_empty_parents(self, area: str, rel: str) -> None:
        """Remove folders emptied by a move below processing/ only: inbox/<style>/ folders are
        the user's (and empty ones still mean something), archive/failed are kept."""
        if area != PROCESSING:
            return
        top = self._path(area)
        parent = os.path.dirname(self._path(area, rel))
        while parent != top and parent.startswith(top):
            try:
                os.rmdir(parent)
            except OSError:
                return
            parent = os.path.dirname(parent)

    def free_name(
        self,
        area: str,
        rel: str,
        companions: Callable[[str], Iterable[str]] = lambda r: (),
        reserved: set[str] | frozenset[str] = frozenset(),
    ) -> str:
        """``rel``, or ``rel`` with ``-1``, ``-2``... before the suffix: the first name under
        ``area`` for which neither it nor any of its ``companions`` (sidecar, bookkeeping,
        error note) exists and which is not ``reserved`` by a job still in flight."""
        n = 0
        while True:
            candidate = with_suffix_number(rel, n)
            names = [candidate, *companions(candidate)]
            if candidate not in reserved and not any(self.exists(area, x) for x in names):
                return candidate
            n += 1
