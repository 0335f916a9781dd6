"""The read-only file route: serves the local storage root over HTTP so that preview URLs in
Prefect artifacts (and thumbnails in the dashboard) open in a browser.

Deliberately small and strict: GET/HEAD only, no directory listings, no dotfiles (atomic writes
leave temporary dotfiles behind), nothing outside the root (`..`, absolute paths and symlinks
that leave the root are refused). Built on the standard library so `styledrop up` can run it in
a thread without another dependency.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import shutil
import signal
import threading
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

# mimetypes depends on the host's /etc/mime.types; pin the types this project writes so a
# preview is never served as application/octet-stream (the Prefect UI would not render it).
CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def resolve_request_path(root: Path, url_path: str) -> Path | None:
    """Map a URL path to a file under `root`, or None if it is not one we may serve.

    `root` must already be resolved. Checks the segments before touching the disk (so `..`
    and dotfiles are refused even when they would stay inside the root) and the resolved path
    afterwards (so a symlink cannot lead outside it).
    """
    path = unquote(urlsplit(url_path).path)
    if "\0" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") or p.startswith(".") for p in parts):
        return None
    candidate = (root.joinpath(*parts)).resolve()
    if candidate != root and root not in candidate.parents:
        return None
    if not candidate.is_file():
        return None
    return candidate


class _Handler(BaseHTTPRequestHandler):
    server_version = "styledrop-files"
    sys_version = ""
    root: Path  # set on the subclass made by make_handler

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        self._serve(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(send_body=False)

    def _refuse_method(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    # Everything that is not GET/HEAD gets 405 rather than the stdlib's 501.
    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method  # noqa: N815

    def _serve(self, send_body: bool) -> None:
        path = resolve_request_path(self.root, self.path)
        if path is None:
            self._not_found(send_body)
            return
        try:
            f = path.open("rb")
        except OSError:
            self._not_found(send_body)
            return
        with f:
            stat = os.fstat(f.fileno())
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type(path))
            self.send_header("Content-Length", str(stat.st_size))
            self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))
            # preview.jpg is overwritten in place while a job runs: always revalidate.
            self.send_header("Cache-Control", "no-cache")
            self.send_header("X-Content-Type-Options", "nosniff")
            # Storage holds user uploads; never let a served file run script in our origin.
            self.send_header("Content-Security-Policy", "sandbox")
            self.end_headers()
            if send_body:
                # The browser may go away mid-download; there is nothing to clean up.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    shutil.copyfileobj(f, self.wfile)

    def _not_found(self, send_body: bool) -> None:
        body = b"not found\n"
        self.send_response(HTTPStatus.NOT_FOUND)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        # One line per request on stderr would drown the dashboard's own output.
        log.debug("%s - %s", self.address_string(), format % args)


def make_handler(root: str | Path) -> type[_Handler]:
    resolved = Path(root).resolve()
    return type("FilesHandler", (_Handler,), {"root": resolved})


def serve_files(root: str | Path, host: str, port: int) -> ThreadingHTTPServer:
    """Start the file route on a daemon thread and return the server (already listening).

    Stop it with `server.shutdown(); server.server_close()`. Port 0 picks a free port:
    read it back from `server.server_address[1]`.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((host, port), make_handler(root))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="styledrop-files", daemon=True)
    thread.start()
    log.info("file route serving %s at http://%s:%d", root, host, server.server_address[1])
    return server


def run_files_server(root: str | Path, host: str, port: int) -> int:
    """Serve in the foreground until SIGINT/SIGTERM (for `styledrop up` and friends)."""
    server = serve_files(root, host, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
    return 0
