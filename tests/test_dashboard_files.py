"""The read-only file route: what it serves, what it refuses. The route runs in a real HTTP
server (uvicorn, as under Streamlit's st.App) so raw, unnormalised paths reach it."""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_until

from dashboard.files import files_route


@pytest.fixture(scope="module")
def files_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("files")
    root = tmp_path / "outputs"
    (root / "_jobs" / "abc").mkdir(parents=True)
    (root / "_jobs" / "abc" / "preview.jpg").write_bytes(b"\xff\xd8jpeg-bytes")
    (root / "_jobs" / "abc" / "result.png").write_bytes(b"\x89PNG-bytes")
    (root / "_jobs" / "abc" / "record.json").write_text('{"status": "done"}')
    (root / "photo.webp").write_bytes(b"RIFFwebp")
    (root / ".tmp-upload").write_bytes(b"half written")
    (tmp_path / "secret.txt").write_text("outside the root")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    return root


@pytest.fixture(scope="module")
def base_url(files_root: Path) -> Iterator[str]:
    import uvicorn
    from starlette.applications import Starlette

    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[files_route(files_root)]), host="127.0.0.1", port=port, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "the file route's server to start")
    try:
        yield f"http://127.0.0.1:{port}/files"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize(
    ("rel", "ctype", "body"),
    [
        ("_jobs/abc/preview.jpg", "image/jpeg", b"\xff\xd8jpeg-bytes"),
        ("_jobs/abc/result.png", "image/png", b"\x89PNG-bytes"),
        ("_jobs/abc/record.json", "application/json", b'{"status": "done"}'),
        ("photo.webp", "image/webp", b"RIFFwebp"),
    ],
)
def test_serves_files_with_their_content_type(base_url: str, rel: str, ctype: str, body: bytes):
    r = httpx.get(f"{base_url}/{rel}")
    assert r.status_code == 200
    assert r.headers["content-type"] == ctype
    assert r.content == body
    assert r.headers["content-length"] == str(len(body))
    assert r.headers["cache-control"] == "no-cache"


def test_head_sends_headers_without_body(base_url: str):
    r = httpx.head(f"{base_url}/_jobs/abc/result.png")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(b"\x89PNG-bytes"))
    assert r.content == b""


def test_percent_encoded_names_are_decoded(base_url: str, files_root: Path):
    (files_root / "my photo.png").write_bytes(b"spaced")
    assert httpx.get(f"{base_url}/my%20photo.png").content == b"spaced"


@pytest.mark.parametrize(
    "raw_path",
    [
        "/../secret.txt",
        "/_jobs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/_jobs/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/escape.txt",  # a symlink pointing outside the root
        "/.tmp-upload",  # dotfiles: half-written atomic-write temporaries
        "/_jobs/abc/result.png%00.txt",
        "/_jobs\\..\\..\\secret.txt",
    ],
)
def test_refuses_paths_outside_the_root_and_dotfiles(base_url: str, raw_path: str):
    # http.client sends the path verbatim; httpx would normalise the dots away first.
    host, port = base_url.removeprefix("http://").removesuffix("/files").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/files" + raw_path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 404, raw_path
    assert b"outside the root" not in body


@pytest.mark.parametrize("rel", ["", "_jobs", "_jobs/abc/", "missing.png"])
def test_no_directory_listing_and_missing_is_404(base_url: str, rel: str):
    r = httpx.get(f"{base_url}/{rel}")
    assert r.status_code == 404
    assert b"result.png" not in r.content


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head(base_url: str, method: str, files_root: Path):
    r = httpx.request(method, f"{base_url}/_jobs/abc/result.png", content=b"overwrite")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert (files_root / "_jobs" / "abc" / "result.png").read_bytes() == b"\x89PNG-bytes"


def test_styledrop_dashboard_serves_pages_and_files_on_one_port(tmp_path: Path):
    """`styledrop dashboard` (Streamlit's server with the route added): the app, a file from
    the storage root under /files/ on the same port, and a clean exit on SIGTERM."""
    import signal
    import subprocess
    import sys

    from conftest import ROOT

    storage = tmp_path / "outputs"
    (storage / "_jobs" / "j").mkdir(parents=True)
    (storage / "_jobs" / "j" / "preview.jpg").write_bytes(b"\xff\xd8preview")
    port = free_port()
    env = dict(os.environ, STYLEDROP_STORAGE=str(storage), PYTHONPATH=str(ROOT))
    log = tmp_path / "dashboard.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "dashboard", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            return httpx.get(f"{base}/_stcore/health", timeout=2).text == "ok"

        wait_until(healthy, 90, "the dashboard to answer")
        r = httpx.get(f"{base}/files/_jobs/j/preview.jpg", timeout=5)
        assert r.status_code == 200 and r.content == b"\xff\xd8preview"
        assert r.headers["content-type"] == "image/jpeg"
        assert httpx.get(f"{base}/files/_jobs/j/missing.jpg", timeout=5).status_code == 404
        assert "<html" in httpx.get(f"{base}/submit", timeout=5).text.lower()  # a page
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
