"""The read-only file route: what it serves (signed, unexpired links only), what it refuses. The
route runs in a real HTTP server (uvicorn, as under Streamlit's st.App) so raw, unnormalised
paths reach it."""

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
from flows import links

KEY = b"test-link-key"


def signed(rel: str, lifetime_s: int = 60) -> str:
    """``rel`` (as the route decodes it) quoted, with a valid signature."""
    from urllib.parse import quote

    return f"{quote(rel)}?{links.signed_query(KEY, rel, lifetime_s)}"


def refused(response: httpx.Response | tuple[int, bytes]) -> bool:
    """The route's one refusal: 403 with a body that names nothing."""
    status, body = (
        (response.status_code, response.content)
        if isinstance(response, httpx.Response)
        else response
    )
    return status == 403 and body == b"forbidden\n"


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
    app = Starlette(routes=[files_route(files_root, KEY)])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")
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
    r = httpx.get(f"{base_url}/{signed(rel)}")
    assert r.status_code == 200
    assert r.headers["content-type"] == ctype
    assert r.content == body
    assert r.headers["content-length"] == str(len(body))
    assert r.headers["cache-control"] == "no-cache"


def test_head_sends_headers_without_body(base_url: str):
    r = httpx.head(f"{base_url}/{signed('_jobs/abc/result.png')}")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(b"\x89PNG-bytes"))
    assert r.content == b""


def test_percent_encoded_names_are_decoded(base_url: str, files_root: Path):
    (files_root / "my photo.png").write_bytes(b"spaced")
    assert httpx.get(f"{base_url}/{signed('my photo.png')}").content == b"spaced"


@pytest.mark.parametrize(
    "query",
    [
        "",  # unsigned
        "?exp=9999999999",  # no signature
        "?sig=AAAA",  # no expiry
        "?exp=9999999999&sig=AAAA",  # a made-up signature
        "?exp=abc&sig=AAAA",
    ],
)
def test_unsigned_links_are_refused(base_url: str, query: str):
    assert refused(httpx.get(f"{base_url}/_jobs/abc/result.png{query}"))


def test_tampered_expired_and_moved_signatures_are_refused(base_url: str):
    rel = "_jobs/abc/result.png"
    good = links.signed_query(KEY, rel, 60)
    assert httpx.get(f"{base_url}/{rel}?{good}").status_code == 200
    exp, sig = (part.split("=", 1)[1] for part in good.split("&"))
    later = int(exp) + 3600
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
    for url in (
        f"{base_url}/{rel}?exp={later}&sig={sig}",  # a longer life, same signature
        f"{base_url}/{rel}?exp={exp}&sig={flipped}",  # one character changed
        f"{base_url}/_jobs/abc/record.json?{good}",  # another file, this file's signature
        f"{base_url}/{rel}?{links.signed_query(b'another key', rel, 60)}",
        f"{base_url}/{rel}?{links.signed_query(KEY, rel, 60, now=0)}",  # expired in 1970
    ):
        assert refused(httpx.get(url)), url


def test_a_link_stops_working_when_it_expires(base_url: str):
    import time

    rel = "_jobs/abc/preview.jpg"
    url = f"{base_url}/{signed(rel, lifetime_s=1)}"
    assert httpx.get(url).status_code == 200
    expires = int(url.split("exp=")[1].split("&")[0])
    wait_until(lambda: time.time() > expires, 5, "the link's expiry")
    assert refused(httpx.get(url))


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
    """Even signed: the signature covers the decoded path, which is then checked."""
    from urllib.parse import unquote

    # http.client sends the path verbatim; httpx would normalise the dots away first.
    host, port = base_url.removeprefix("http://").removesuffix("/files").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    decoded = unquote(raw_path).removeprefix("/")
    conn.request("GET", f"/files{raw_path}?{links.signed_query(KEY, decoded, 60)}")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert refused((resp.status, body)), raw_path


@pytest.mark.parametrize("rel", ["", "_jobs", "_jobs/abc/", "_jobs/abc", "missing.png"])
def test_no_directory_listing_and_missing_is_the_same_refusal(base_url: str, rel: str):
    """Signed or not, a folder or a missing file reads exactly like a refused link."""
    assert refused(httpx.get(f"{base_url}/{signed(rel)}"))
    assert refused(httpx.get(f"{base_url}/{rel}"))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head(base_url: str, method: str, files_root: Path):
    r = httpx.request(method, f"{base_url}/{signed('_jobs/abc/result.png')}", content=b"x")
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

    from flows.settings import Settings
    from flows.storage import Storage

    storage = tmp_path / "outputs"
    (storage / "_jobs" / "j").mkdir(parents=True)
    (storage / "_jobs" / "j" / "preview.jpg").write_bytes(b"\xff\xd8preview")
    port = free_port()
    # The flow and the dashboard share the data folder, so the link secret made in its
    # .styledrop/ on first use.
    env = dict(
        os.environ,
        STYLEDROP_DATA_DIR=str(tmp_path),
        STYLEDROP_STORAGE=str(storage),
        PYTHONPATH=str(ROOT),
    )
    env.pop("STYLEDROP_LINK_SECRET", None)
    flow_side = Storage(str(storage), Settings(data_dir=tmp_path, dashboard_port=port))
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
        link = flow_side.public_url("_jobs/j/preview.jpg")
        assert link.startswith(f"{base}/files/_jobs/j/preview.jpg?exp=")
        r = httpx.get(link, timeout=5)
        assert r.status_code == 200 and r.content == b"\xff\xd8preview"
        assert r.headers["content-type"] == "image/jpeg"
        assert refused(httpx.get(f"{base}/files/_jobs/j/preview.jpg", timeout=5))
        assert refused(httpx.get(flow_side.public_url("_jobs/j/missing.jpg"), timeout=5))
        assert "<html" in httpx.get(f"{base}/submit", timeout=5).text.lower()  # a page
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
    secret = tmp_path / ".styledrop" / "link-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
