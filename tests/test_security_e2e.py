"""Safe on a network, end to end: `styledrop up` with every protection on (the Prefect API's auth
string, the dashboard sign-in against a real OpenID Connect provider, signed file links) and
every secret set to a distinctive value, then:

1. a job from the folder inbox completes (and a bad file fails with its note);
2. in headless Chromium: not signed in -> only the sign-in page; a user outside the allow-list
   -> refused; the allowed user submits a photo and downloads the result; sign-out works;
3. every endpoint styledrop used during the run (recorded from every process of the stack by
   tests/http_recorder) answers 401 to a client without the auth string or with a wrong one;
4. hostile requests (unsigned, tampered, expired, path-traversal and encoded-path links;
   oversized and malformed uploads; forged OIDC callbacks and sign-in cookies; wrong auth on
   the Prefect API and the S3 webhook), all on loopback, counted by kind: none is accepted;
5. no secret appears in the logs, artifacts, job records, flow-run parameters, Prefect logs,
   events, blocks, automations, the database, error notes or the dashboard's pages.

The tests share one stack and run in this order (each later one uses what the earlier left).
The counts are written to test-artifacts/<test>/hostile-requests.json (docs/security.md).
"""

from __future__ import annotations

import base64
import collections
import http.client
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
import pytest
from browser import Browser, act, click_button, fill_submit_form, find, page_text, text_appears
from conftest import ROOT, free_port, make_image, wait_until
from oidc_provider import oidc_provider, python_312
from PIL import Image

from flows import links

pytestmark = pytest.mark.slow

RUN = secrets.token_hex(6)  # distinctive values, new for every run of this module
SECRETS = {
    "PREFECT_API_AUTH_STRING": f"api-auth-{RUN}",
    "STYLEDROP_S3_SECRET": f"s3-secret-{RUN}",
    "STYLEDROP_S3_WEBHOOK_TOKEN": f"webhook-token-{RUN}",
    "STYLEDROP_OIDC_CLIENT_SECRET": f"oidc-client-secret-{RUN}",
    "STYLEDROP_SIGNIN_COOKIE_SECRET": f"cookie-secret-{RUN}",
    "STYLEDROP_LINK_SECRET": f"link-secret-{RUN}",
}
ALLOWED = "alice@example.com"
USERS = [{"sub": "alice", "email": ALLOWED}, {"sub": "mallory", "email": "mallory@elsewhere.test"}]
MAX_UPLOAD_MB = 1
# What the hostile requests did, by kind: {"kind": {"sent": n, "accepted": n}}; filled by the
# tests in order and checked (and written) by the last.
HOSTILE: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@dataclass
class Secure:
    data: Path
    dashboard: str
    api: str
    issuer: str
    up_log: Path
    http_log: Path
    proc: subprocess.Popen
    pages: list[str] = field(default_factory=list)  # page sources the browser saw
    session: dict[str, str] = field(default_factory=dict)  # a signed-in upload session

    def auth(self) -> dict[str, str]:
        token = base64.b64encode(SECRETS["PREFECT_API_AUTH_STRING"].encode()).decode()
        return {"Authorization": f"Basic {token}"}


def count(kind: str, accepted: bool, status: int | None = None) -> None:
    HOSTILE[kind]["sent"] += 1
    HOSTILE[kind]["accepted"] += int(accepted)
    if status is not None:
        HOSTILE[kind][f"answered {status}"] += 1


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    if python_312() is None:
        pytest.skip("the OIDC provider (oidc-provider-mock 0.4) needs Python >= 3.12")
    tmp = tmp_path_factory.mktemp("secure")
    data = tmp / "data"
    logs = ROOT / "test-artifacts" / "test_security_e2e"
    logs.mkdir(parents=True, exist_ok=True)
    with oidc_provider(free_port(), USERS, tmp / "oidc.log") as issuer:
        prefect_port, dashboard_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "STYLEDROP_"))}
        env.update(SECRETS)
        env.update(
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "http_recorder"), str(ROOT)]),
            STYLEDROP_TEST_HTTP_LOG=str(tmp / "http.log"),
            STYLEDROP_DATA_DIR=str(data),
            STYLEDROP_BACKBONE="random",
            STYLEDROP_DEVICE="cpu",
            STYLEDROP_SENSOR_OPTIONS=json.dumps({"size": 48, "iterations": 6}),
            STYLEDROP_PREFECT_PORT=str(prefect_port),
            STYLEDROP_DASHBOARD_PORT=str(dashboard_port),
            STYLEDROP_DASHBOARD_REFRESH_S="1",
            STYLEDROP_PROGRESS_INTERVAL_S="0.5",
            STYLEDROP_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
            STYLEDROP_S3_KEY="AKIASECURITYTEST",
            # A notification block to search too (its URL is kept in the block's secrets).
            STYLEDROP_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/alerts",
            STYLEDROP_OIDC_METADATA_URL=f"{issuer}/.well-known/openid-configuration",
            STYLEDROP_OIDC_CLIENT_ID="styledrop",
            STYLEDROP_SIGNIN_ALLOWED=ALLOWED,
        )
        up_log = logs / "up.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "up"],
            env=env,
            cwd=ROOT,
            stdout=up_log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack = Secure(
            data=data,
            dashboard=f"http://127.0.0.1:{dashboard_port}",
            api=f"http://127.0.0.1:{prefect_port}/api",
            issuer=issuer,
            up_log=up_log,
            http_log=tmp / "http.log",
            proc=proc,
        )
        try:

            def samples_done() -> bool:
                assert proc.poll() is None, up_log.read_text()
                return all((data / "outputs" / n).exists() for n in ("landscape.png", "city.png"))

            wait_until(samples_done, 360, "`up` with every protection to stylise the samples", 1)
            yield stack
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(120)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            for log in (data / ".styledrop" / "logs").glob("*.log"):
                (logs / log.name).write_bytes(log.read_bytes())


# --- 1. the folder inbox ---------------------------------------------------------------------


def test_a_job_from_the_folder_inbox_completes_on_the_locked_api(secure: Secure) -> None:
    (secure.data / "inbox" / "bad.jpg").write_text("not a picture at all")
    note = secure.data / "failed" / "bad.jpg.error.txt"
    wait_until(note.exists, 180, "the bad file's note in failed/", 1)
    assert (secure.data / "archive" / "landscape.jpg").exists()
    runs = httpx.post(
        f"{secure.api}/flow_runs/filter", json={"limit": 50}, headers=secure.auth(), timeout=10
    ).json()
    inbox = [r for r in runs if "inbox" in r["tags"]]
    assert sum(r["state_type"] == "COMPLETED" for r in inbox) >= 2, runs


# --- 2. in a browser ---------------------------------------------------------------------------


def only_the_sign_in_page(driver) -> bool:
    text = page_text(driver)
    return "Sign in to see the runs" in text and "Submit" not in text and "Results" not in text


def sign_in(driver, secure: Secure, subject: str) -> None:
    from selenium.webdriver.common.keys import Keys

    click_button(driver, "Sign in")
    # Enter submits the subject's own form (Authorize), not the page's Deny form.
    find(driver, "#subject-input", 30, "the provider's sign-in form").send_keys(subject, Keys.ENTER)
    wait_until(lambda: driver.current_url.startswith(secure.dashboard), 30, "back at the dashboard")


def sign_out(driver) -> None:
    click_button(driver, "Sign out")
    click_button(driver, "End session")  # the provider's own end-session page
    wait_until(lambda: only_the_sign_in_page(driver), 30, "the sign-in page after signing out")


def signed_in_cookie(driver) -> bool:
    return any(c["name"].startswith("_streamlit_user") for c in driver.get_cookies())


def keep_page(driver, secure: Secure) -> None:
    secure.pages.append(driver.page_source + "\n" + page_text(driver))


def test_sign_in_submit_and_download_in_a_browser(
    secure: Secure, browser: Browser, artifacts_dir: Path
) -> None:
    try:
        browse(secure, browser, artifacts_dir)
    except BaseException:
        browser.driver.save_screenshot(str(artifacts_dir / "failed.png"))
        (artifacts_dir / "failed.txt").write_text(page_text(browser.driver))
        raise


def browse(secure: Secure, browser: Browser, artifacts_dir: Path) -> None:
    d = browser.driver
    # Not signed in: every page is the sign-in page.
    for path in ("/", "/submit", "/results", "/?run=00000000-0000-0000-0000-000000000000"):
        d.get(secure.dashboard + path)
        wait_until(lambda: only_the_sign_in_page(d), 60, f"only the sign-in page at {path}")
        keep_page(d, secure)

    # Forged sign-in cookies: Streamlit's cookie is signed with the cookie secret.
    forged = {"email": ALLOWED, "is_logged_in": True, "origin": secure.dashboard}
    for value in (
        json.dumps(forged),
        base64.b64encode(json.dumps(forged).encode()).decode(),
        "2|1:0|10:1700000000|15:_streamlit_user|8:e30=|" + "0" * 64,
    ):
        d.delete_all_cookies()
        d.add_cookie({"name": "_streamlit_user", "value": value, "path": "/"})
        d.get(secure.dashboard + "/submit")
        wait_until(lambda: only_the_sign_in_page(d), 60, "the sign-in page despite the cookie")
        count("forged sign-in cookie", accepted="Stylise a photo" in page_text(d))
    d.delete_all_cookies()

    # A real sign-in started, then a forged callback with its state and a made-up code.
    for code in ("forged-code", "", "A" * 512):
        d.get(secure.dashboard)
        wait_until(lambda: only_the_sign_in_page(d), 60, "the sign-in page")
        click_button(d, "Sign in")
        wait_until(lambda: d.current_url.startswith(secure.issuer), 30, "the provider's page")
        state = parse_qs(urlsplit(d.current_url).query)["state"][0]
        d.get(f"{secure.dashboard}/oauth2callback?code={quote(code)}&state={quote(state)}")
        wait_until(lambda: only_the_sign_in_page(d), 60, "still signed out after the forgery")
        count("forged OIDC callback", accepted=signed_in_cookie(d))

    # A user the provider knows but the allow-list does not.
    sign_in(d, secure, "mallory")
    text_appears(d, "mallory@elsewhere.test is not allowed", 60, "the refusal")
    keep_page(d, secure)
    d.get(secure.dashboard + "/submit")
    text_appears(d, "is not allowed", 60, "the refusal on the Submit page too")
    assert "Stylise a photo" not in page_text(d)
    sign_out(d)

    # The allowed user: a file that is no image is refused by the page, a photo goes through.
    sign_in(d, secure, "alice")
    text_appears(d, f"Signed in as {ALLOWED}", 60, "the signed-in bar")
    d.get(secure.dashboard + "/submit")
    uploader = ".st-key-content input[type=file]"
    find(d, uploader, 60, "the photo uploader", visible=False)
    junk = artifacts_dir / "junk.png"
    junk.write_bytes(b"<script>alert(1)</script>" * 10)
    find(d, uploader, visible=False).send_keys(str(junk))
    text_appears(d, "'junk.png' could not be read as an image", 120, "the junk's refusal")
    count("malformed upload (through the page)", accepted="junk.png ·" in page_text(d))
    keep_page(d, secure)
    # The upload session the page used, for the hostile uploads below.
    entries = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    upload = next(u for u in entries if "/_stcore/upload_file/" in u)
    session_id = upload.split("/_stcore/upload_file/")[1].split("/")[0]
    xsrf = next(c["value"] for c in d.get_cookies() if c["name"] == "_streamlit_xsrf")
    hostile_uploads(secure, session_id, xsrf)

    photo = make_image(artifacts_dir / "beach.png", (64, 48), seed=5)
    d.get(secure.dashboard + "/submit")
    fill_submit_form(d, photo)
    act(d, ".st-key-submit button", lambda e: e.click(), "a click on Stylise")
    wait_until(lambda: "run=" in d.current_url, 180, "the run page after submitting")
    run_id = d.current_url.split("run=")[1].split("&")[0]
    text_appears(d, f"Submitted by {ALLOWED}", 60, "who submitted it")
    find(d, ".st-key-download_result button", 300, "the finished run's download")
    text_appears(d, "State: Completed", 60, "the run page to show Completed")
    keep_page(d, secure)
    act(d, ".st-key-download_result button", lambda e: e.click(), "a click on Download")

    def downloaded() -> Path | None:
        done = [p for p in browser.downloads.iterdir() if p.suffix == ".png"]
        return done[0] if done else None

    with Image.open(io.BytesIO(wait_until(downloaded, 60, "the result").read_bytes())) as img:
        assert img.format == "PNG" and max(img.size) == 48
    run = httpx.get(f"{secure.api}/flow_runs/{run_id}", headers=secure.auth(), timeout=10).json()
    assert run["state_type"] == "COMPLETED"
    assert {"dashboard", f"submitter:{ALLOWED}"} <= set(run["tags"])
    for path in ("/", "/results"):
        d.get(secure.dashboard + path)
        text_appears(d, f"Signed in as {ALLOWED}", 60, f"{path} signed in")
        time.sleep(2)  # let the page draw its pictures and links before keeping it
        keep_page(d, secure)
    sign_out(d)
    assert not signed_in_cookie(d)
    d.get(secure.dashboard + "/submit")
    wait_until(lambda: only_the_sign_in_page(d), 60, "signed out for good")


def hostile_uploads(secure: Secure, session_id: str, xsrf: str) -> None:
    """Uploads straight to Streamlit's upload route with a live signed-in session: only a
    well-formed, small enough file may land (and the page then checks it decodes)."""
    url = f"{secure.dashboard}/_stcore/upload_file/{session_id}"
    good = {"X-Xsrftoken": xsrf}
    cookies = {"_streamlit_xsrf": xsrf}
    limit = MAX_UPLOAD_MB * 1024 * 1024
    big = b"\x89PNG" + b"\0" * (limit + 4096)
    with httpx.Client(timeout=30, cookies=cookies) as c:
        cases = [
            ("oversized upload", dict(files={"file": ("big.png", big, "image/png")})),
            ("oversized upload", dict(content=big, headers={"Content-Type": "image/png"})),
            (
                "oversized upload",
                dict(content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)])),
            ),
            (
                "malformed upload",
                dict(
                    content=b"--x\r\nnot multipart",
                    headers={"Content-Type": "multipart/form-data; boundary=x"},
                ),
            ),
            (
                "malformed upload",
                dict(content=b"", headers={"Content-Type": "multipart/form-data"}),
            ),
            ("malformed upload", dict(files=[("a", ("a.png", b"1")), ("b", ("b.png", b"2"))])),
            ("malformed upload", dict(data={"not": "a file"})),
        ]
        for i, (kind, kwargs) in enumerate(cases):
            headers = {**good, **kwargs.pop("headers", {})}
            try:
                r = c.put(f"{url}/hostile-{i}", headers=headers, **kwargs)
                accepted, status = r.is_success, r.status_code
            except httpx.HTTPError:
                accepted, status = False, 0  # the server cut the oversized stream off
            count(kind, accepted, status)
        for length in ("-5", "abc", str(2**70)):  # lengths no client library would send
            status = send_with_length(
                f"{url}/hostile-length",
                "PUT",
                length,
                {
                    **good,
                    "Cookie": f"_streamlit_xsrf={xsrf}",
                    "Content-Type": "multipart/form-data",
                },
            )
            count("malformed upload", 200 <= status < 300, status)
        # Without the XSRF token, or into a session that does not exist.
        small = {"files": {"file": ("a.png", b"\x89PNG tiny", "image/png")}}
        for i, (headers, target) in enumerate(
            [
                ({}, url),
                ({"X-Xsrftoken": "forged"}, url),
                (
                    good,
                    f"{secure.dashboard}/_stcore/upload_file/00000000-0000-0000-0000-000000000000",
                ),
            ]
        ):
            r = c.put(f"{target}/foreign-{i}", headers=headers, **small)
            count("upload without a valid session or XSRF token", r.is_success, r.status_code)


# --- 3. every endpoint styledrop used refuses a client without the auth string ----------------


def used_endpoints(secure: Secure) -> set[tuple[str, str]]:
    """(method, path?query) of every request the stack's processes sent to the Prefect API."""
    found = set()
    for line in secure.http_log.read_text().splitlines():
        method, _, url = line.partition(" ")
        if url.startswith(secure.api + "/"):
            parts = urlsplit(url)
            found.add((method, parts.path + (f"?{parts.query}" if parts.query else "")))
    return found


UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# Open by Prefect's design, for liveness probes: they say nothing of runs or settings.
OPEN = {("GET", "/api/health"), ("GET", "/api/ready")}
WRONG_AUTH = [
    {},
    {"Authorization": "Basic " + base64.b64encode(b"a-wrong-string").decode()},
    {"Authorization": f"Bearer {SECRETS['PREFECT_API_AUTH_STRING']}"},  # right string, scheme
    {
        "Authorization": "Basic "
        + base64.b64encode(f"{SECRETS['PREFECT_API_AUTH_STRING']}x".encode()).decode()
    },
    {"Authorization": "Basic !!!not-base64!!!"},
    {"Authorization": "Basic"},
]


def test_every_endpoint_styledrop_used_refuses_a_client_without_credentials(
    secure: Secure,
) -> None:
    used = used_endpoints(secure)
    paths = {path.split("?")[0] for _, path in used}
    # The run above went through these (the worker, the sensor, the dashboard, the set-up).
    for expected in (
        "/api/flow_runs/filter",
        "/api/deployments/name/stylize/stylize",
        "/api/artifacts/filter",
        "/api/logs/",
    ):
        assert expected in paths, sorted(paths)
    assert any(p.endswith("/create_flow_run") for p in paths)
    assert any(p.endswith("/get_scheduled_flow_runs") for p in paths)
    refused = []
    with httpx.Client(base_url=secure.api.removesuffix("/api"), timeout=10) as c:
        for method, path in sorted(used - OPEN):
            for headers in WRONG_AUTH[:2]:
                body = {} if method in ("POST", "PUT", "PATCH") else None
                r = c.request(method, path, headers=headers, json=body)
                refused.append((method, path, r.status_code))
                count(
                    "Prefect API: an endpoint styledrop uses, no or wrong auth",
                    r.status_code != 401,
                    r.status_code,
                )
    assert all(code == 401 for *_, code in refused), [x for x in refused if x[2] != 401]
    templates = {(m, re.sub(UUID, "{id}", p.split("?")[0])) for m, p in used - OPEN}
    print(
        f"\n{len(templates)} endpoints styledrop used ({len(used - OPEN)} distinct requests), "
        "each refused without credentials"
    )

    # The websockets (events in and out, logs out) want the string in their first message.
    from websockets.sync.client import connect

    ws = secure.api.replace("http://", "ws://")
    for path in ("/events/in", "/events/out", "/logs/out"):
        for token in (None, "a-wrong-string", ""):
            closed = None
            with connect(f"{ws}{path}", subprotocols=["prefect"], open_timeout=10) as sock:
                sock.send(json.dumps({"type": "auth", "token": token}))
                try:
                    sock.recv(timeout=10)
                except Exception as exc:  # noqa: BLE001 - the close is what we wait for
                    closed = getattr(getattr(exc, "rcvd", None), "code", None)
            count("Prefect API: websocket, no or wrong auth", closed != 1008, closed)
            assert closed == 1008, (path, token, closed)


# --- 4. hostile requests -----------------------------------------------------------------------


def raw_get(base: str, raw_path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client normalises the dots or the escapes)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", raw_path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_hostile_requests_are_all_refused(secure: Secure) -> None:
    key = SECRETS["STYLEDROP_LINK_SECRET"].encode()
    base = secure.dashboard
    jobs = sorted(
        p.relative_to(secure.data / "outputs").as_posix()
        for p in (secure.data / "outputs").rglob("*")
        if p.is_file()
    )
    real = [p for p in jobs if not p.startswith("_prefect_results")][:12]
    assert len(real) >= 6, jobs
    missing = ["_jobs/0000000000000000/result.png", "nothing.png", "_jobs/", "_uploads"]

    def link(kind: str, path_part: str, query: str = "") -> None:
        status, body = raw_get(base, f"/files/{path_part}{'?' + query if query else ''}")
        count(kind, 200 <= status < 300, status)
        if status == 403:  # the route's one refusal, whatever exists (Streamlit's own path
            assert body == b"forbidden\n"  # checks may refuse a path before it: 400)
        assert status in (400, 403, 404), (kind, path_part, status)

    for rel in real + missing:
        link("link: unsigned", quote(rel))
        link("link: unsigned", quote(rel), "exp=9999999999")
    for rel in real:
        good = links.signed_query(key, rel, 600)
        exp, sig = (v[0] for v in parse_qs(good).values())
        link("link: tampered", quote(rel), f"exp={int(exp) + 60}&sig={sig}")
        link(
            "link: tampered",
            quote(rel),
            f"exp={exp}&sig={sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",
        )
        link("link: tampered", quote(rel) + "x", good)
        link("link: tampered", quote(rel), links.signed_query(b"guessed-key", rel, 600))
        link("link: expired", quote(rel), links.signed_query(key, rel, 60, now=time.time() - 120))
        link("link: expired", quote(rel), links.signed_query(key, rel, 1, now=0))
    # Signed with the real key (as if it had leaked), yet leaving the root or hidden.
    for raw in [
        "../.styledrop/logs/up.log",
        "_jobs/../../.styledrop/prefect/prefect.db",
        "../../../../etc/passwd",
        "/etc/passwd",
        ".hidden",
        "_jobs/.tmp-x",
        "..\\..\\etc\\passwd",
        "landscape.png\0.txt",
        "./landscape.png",
    ]:
        link("link: path traversal", quote(raw, safe="/"), links.signed_query(key, raw, 600))
        link("link: path traversal", raw.replace("\0", "%00"), links.signed_query(key, raw, 600))
    for encoded in [
        "%2e%2e/%2e%2e/etc/passwd",
        "%2e%2e%2f.styledrop%2flogs%2fup.log",
        "..%2f..%2fetc%2fpasswd",
        "%252e%252e/etc/passwd",
        "landscape.png%00",
        "%2Fetc%2Fpasswd",
        "_jobs%2F..%2F..%2F.styledrop",
        "%c0%ae%c0%ae/etc/passwd",
    ]:
        decoded = unquote(encoded)
        link("link: encoded path", encoded, links.signed_query(key, decoded, 600))
        link("link: encoded path", encoded)

    # Forged OIDC callbacks with no sign-in started, and forged logins.
    with httpx.Client(base_url=base, timeout=10, follow_redirects=False) as c:
        forged = [
            "",
            "?code=x",
            "?state=x",
            "?code=x&state=y",
            "?code=&state=",
            "?error=access_denied",
            "?error=x&state=y&code=z",
            f"?code={'A' * 4000}&state=s",
            "?code=x&state=y%0d%0aSet-Cookie:%20_streamlit_user=1",
            "?code=x&state=_state_default_x",
            "?state=../../etc&code=1",
        ]
        for query in forged:
            r = c.get(f"/oauth2callback{query}")
            signed_in = "_streamlit_user=" in r.headers.get("set-cookie", "")
            count("forged OIDC callback", signed_in, r.status_code)
            r = c.get(f"/oauth2callback{query}", headers={"Cookie": "session=forged"})
            signed_in = "_streamlit_user=" in r.headers.get("set-cookie", "")
            count("forged OIDC callback", signed_in, r.status_code)
        for provider in ("default", "forged.jwt.token", "", "../x"):
            r = c.get("/auth/login", params={"provider": provider})
            signed_in = "_streamlit_user=" in r.headers.get("set-cookie", "")
            count("forged OIDC callback", signed_in, r.status_code)

    # Wrong auth on the Prefect API: reads and writes of runs, deployments, automations,
    # blocks, the work pool.
    pool = "styledrop-gpu"
    requests = [
        ("POST", "/flow_runs/filter"),
        ("GET", "/deployments/name/stylize/stylize"),
        ("POST", "/deployments/filter"),
        ("POST", "/automations/filter"),
        ("POST", "/block_documents/filter"),
        ("POST", f"/work_pools/{pool}/workers/filter"),
        ("DELETE", "/flow_runs/00000000-0000-0000-0000-000000000000"),
        ("POST", "/variables/"),
        ("GET", "/admin/version"),
        ("GET", "/admin/settings"),
    ]
    with httpx.Client(base_url=secure.api, timeout=10) as c:
        for method, path in requests:
            for headers in WRONG_AUTH:
                body = {} if method == "POST" else None
                r = c.request(method, path, headers=headers, json=body)
                count("Prefect API: wrong auth", r.status_code != 401, r.status_code)
    # ... and on the S3 webhook (served by `watch --s3`; here its server on loopback).
    from pydantic import SecretStr

    from flows.sensors.webhook import NotificationServer

    noted: list[bytes] = []
    server = NotificationServer(
        "127.0.0.1",
        0,
        lambda body: noted.append(body) or 1,
        SecretStr(SECRETS["STYLEDROP_S3_WEBHOOK_TOKEN"]),
    )
    server.start()
    token = SECRETS["STYLEDROP_S3_WEBHOOK_TOKEN"]
    try:
        event = {
            "Records": [
                {
                    "eventName": "s3:ObjectCreated:Put",
                    "s3": {"bucket": {"name": "b"}, "object": {"key": "inbox/x.png"}},
                }
            ]
        }
        with httpx.Client(timeout=10) as c:
            for headers in [
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": token},
                {"Authorization": f"Basic {token}"},
                {"Authorization": "Bearer"},
                {"Authorization": f"Bearer {token}x"},
                {"Authorization": "bearer"},
                {"Authorization": f"Bearer {token[:-1]}"},
            ]:
                for _ in range(2):
                    r = c.post(server.url, json=event, headers=headers)
                    count("S3 webhook: wrong auth", r.is_success, r.status_code)
            right = {"Authorization": f"Bearer {token}"}
            for body in (b"x" * ((1 << 20) + 1), b"x" * (2 << 20)):
                r = c.post(server.url, content=body, headers=right)
                count("S3 webhook: oversized body", r.is_success, r.status_code)
        for length in ("-1", "abc", "99999999999"):
            status = send_with_length(server.url, "POST", length, right)
            count("S3 webhook: malformed length", 200 <= status < 300, status)
    finally:
        server.stop()
    assert not noted

    report = {kind: dict(c) for kind, c in sorted(HOSTILE.items())}
    total = sum(c["sent"] for c in HOSTILE.values())
    accepted = sum(c["accepted"] for c in HOSTILE.values())
    out = ROOT / "test-artifacts" / "test_security_e2e" / "hostile-requests.json"
    out.write_text(json.dumps({"total": total, "accepted": accepted, "by_kind": report}, indent=2))
    print(f"\nhostile requests: {total} sent, {accepted} accepted")
    for kind, c in report.items():
        answers = ", ".join(
            f"{k.split()[1]}: {v}" for k, v in c.items() if k.startswith("answered")
        )
        print(f"  {kind}: {c['sent']} sent, {c['accepted']} accepted ({answers})")
    assert total >= 200
    assert accepted == 0, report


def send_with_length(url: str, method: str, length: str, headers: dict[str, str]) -> int:
    """Send a request whose Content-Length is ``length``, whatever it says; its status, or 0
    when the server cut it off."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, parts.path or "/")
        for k, v in {**headers, "Content-Length": length}.items():
            conn.putheader(k, v)
        conn.endheaders()
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0  # cut off: not accepted
    finally:
        conn.close()


# --- 5. no secret leaves -----------------------------------------------------------------------


def api_json(secure: Secure, path: str) -> str:
    """Everything the API's filter at ``path`` answers, every page, as text."""
    texts = []
    with httpx.Client(base_url=secure.api, headers=secure.auth(), timeout=30) as c:
        if path == "/events/filter":  # pages by token
            page = c.post(path, json={"limit": 200}).json()
            texts.append(json.dumps(page))
            while page.get("next_page"):
                page = c.get(page["next_page"]).json()
                texts.append(json.dumps(page))
            return "\n".join(texts)
        offset = 0
        while True:
            page = c.post(path, json={"limit": 200, "offset": offset}).json()
            texts.append(json.dumps(page))
            if not isinstance(page, list) or len(page) < 200:
                return "\n".join(texts)
            offset += 200


def test_no_secret_leaves(secure: Secure) -> None:
    assert secure.pages, "the browser test keeps the pages it saw"
    places: dict[str, str] = {
        "dashboard pages": "\n".join(secure.pages),
        "artifacts": api_json(secure, "/artifacts/filter"),
        "flow runs (parameters, tags, state messages)": api_json(secure, "/flow_runs/filter"),
        "task runs": api_json(secure, "/task_runs/filter"),
        "Prefect logs": api_json(secure, "/logs/filter"),
        "events": api_json(secure, "/events/filter"),
        "blocks": api_json(secure, "/block_documents/filter"),
        "automations": api_json(secure, "/automations/filter"),
        "variables": api_json(secure, "/variables/filter"),
        "deployments": api_json(secure, "/deployments/filter"),
        "work pools": api_json(secure, "/work_pools/filter"),
    }
    assert ALLOWED in places["flow runs (parameters, tags, state messages)"]  # searched right
    stores = {  # where the secrets are meant to be: the stack's own, mode 0600
        secure.data / ".styledrop" / "dashboard-secrets.toml",
    }
    for path in stores:
        assert path.stat().st_mode & 0o777 == 0o600
    files = [secure.up_log, *sorted(p for p in secure.data.rglob("*") if p.is_file())]
    for path in files:
        if path in stores:
            continue
        places[
            str(path.relative_to(secure.data) if path.is_relative_to(secure.data) else path.name)
        ] = path.read_bytes().decode("latin-1")
    assert any("record.json" in p for p in places) and any("error.txt" in p for p in places)
    assert any(p.endswith(".log") for p in places) and any(p.endswith(".db") for p in places)
    needles = {}
    for name, value in SECRETS.items():
        needles[name] = value
        needles[f"{name} (base64)"] = base64.b64encode(value.encode()).decode()
    leaks = [
        f"{name} in {where}"
        for where, text in places.items()
        for name, needle in needles.items()
        if needle in text
    ]
    print(f"\nsearched {len(places)} places for {len(SECRETS)} secrets: {len(leaks)} leaks")
    assert not leaks, leaks
    # Nothing of the stack's secrets was written into the checkout.
    in_checkout = ROOT / ".styledrop" / "dashboard-secrets.toml"
    assert not in_checkout.exists() or RUN not in in_checkout.read_text()
