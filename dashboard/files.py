"""The read-only file route, `/files/<path>` on the dashboard's own server: serves the local
storage root so that preview URLs in Prefect artifacts (and pictures in the dashboard) open in a
browser from the one URL people already have.

A Starlette route that `dashboard/server.py` hands to `st.App(routes=...)`. Deliberately small
and strict: only links signed by styledrop and not yet expired (`flows.links`, as S3's presigned
URLs), GET/HEAD only, no directory listings, no dotfiles (atomic writes leave temporary dotfiles
behind), nothing outside the root (`..`, absolute paths and symlinks that leave the root are
refused). Every refusal is the same 403, whether or not the file exists. S3 storage needs none
of this: its URLs are presigned.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.images import EXTENSIONS
from flows import links

# The URL prefix of the route; flows.settings builds the public URLs with the same one.
PREFIX = "/files"

# mimetypes depends on the host's /etc/mime.types; pin the types this project writes so a
# preview is never served as application/octet-stream (the Prefect UI would not render it).
CONTENT_TYPES = {
    **{suffix: f"image/{fmt}" for suffix, fmt in EXTENSIONS.items()},
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}


def forbidden() -> Response:
    """One answer for every refusal: nothing tells a missing file from a refused link."""
    return PlainTextResponse("forbidden\n", status_code=403)


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def resolve_request_path(root: Path, rel: str) -> Path | None:
    """Map a (decoded) path below the route to a file under `root`, or None if it is not one
    we may serve.

    `root` must already be resolved. Checks the segments before touching the disk (so `..`
    and dotfiles are refused even when they would stay inside the root) and the resolved path
    afterwards (so a symlink cannot lead outside it).
    """
    if "\0" in rel or "\\" in rel:
        return None
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") or p.startswith(".") for p in parts):
        return None
    candidate = (root.joinpath(*parts)).resolve()
    if candidate != root and root not in candidate.parents:
        return None
    if not candidate.is_file():
        return None
    return candidate


def files_route(root: str | Path, key: bytes) -> Route:
    """The route serving `root` (a local folder) under PREFIX to links signed with `key`."""
    resolved = Path(root).resolve()

    async def serve(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(status_code=405, headers={"Allow": "GET, HEAD"})
        # Decoded, so %2e%2e and %2f are checked as the dots and slashes they are.
        rel = request.path_params["rel"]
        query = request.query_params
        if not links.valid(key, rel, query.get("exp"), query.get("sig")):
            return forbidden()
        path = resolve_request_path(resolved, rel)
        if path is None:
            return forbidden()
        return FileResponse(
            path,
            media_type=content_type(path),
            headers={
                # preview.jpg is overwritten in place while a job runs: always revalidate.
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                # Storage holds user uploads; never let a served file run script in our origin.
                "Content-Security-Policy": "sandbox",
            },
        )

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    return Route(PREFIX + "/{rel:path}", serve, methods=methods)
