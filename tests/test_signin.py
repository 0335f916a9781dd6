"""The dashboard sign-in (Streamlit's st.login against a real OpenID Connect provider on
loopback, tests/oidc_provider.py) and the rule that keeps an unprotected stack on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from browser import Browser, click_button, find, page_text, text_appears
from conftest import ROOT, free_port, stop_process, wait_until
from oidc_provider import oidc_provider, python_312
from pydantic import SecretStr, ValidationError

from dashboard.signin import allowed
from flows.commands.dashboard import write_secrets
from flows.network import exposure_problem, is_loopback
from flows.settings import Settings

CLIENT_SECRET = "oidc-client-secret-Hq3Lm"
SIGN_IN = {
    "oidc_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
    "oidc_client_id": "styledrop",
    "oidc_client_secret": CLIENT_SECRET,
}


@pytest.mark.parametrize(
    ("email", "allow_list", "verified", "ok"),
    [
        ("alice@example.com", "", True, True),  # no list: everyone signed in
        ("alice@example.com", "alice@example.com", True, True),
        ("Alice@Example.COM", " alice@example.com ,bob@x.org", True, True),
        ("carol@example.org", "alice@example.com,@example.org", True, True),
        ("carol@example.org", "alice@example.com", True, False),
        ("eve@sub.example.org", "@example.org", True, False),  # a domain is exact
        ("eve@example.org.evil.test", "@example.org", True, False),
        ("alice@example.com", "alice@example.com", False, False),  # not verified
        ("alice@example.com", "alice@example.com", "false", False),
        ("", "", True, False),  # no address at all
        (None, "@example.org", True, False),
    ],
)
def test_the_allow_list(email, allow_list, verified, ok) -> None:
    assert allowed(email, allow_list, verified) is ok


def test_sign_in_settings_go_together() -> None:
    with pytest.raises(ValidationError, match="STYLEDROP_OIDC_CLIENT_SECRET"):
        Settings(oidc_metadata_url=SIGN_IN["oidc_metadata_url"], oidc_client_id="x")
    settings = Settings(**SIGN_IN)
    assert settings.sign_in and CLIENT_SECRET not in repr(settings)
    assert not Settings().sign_in


def test_streamlit_gets_its_auth_secrets_in_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, dashboard_port=8765, **SIGN_IN)
    path = write_secrets(settings)
    assert path == tmp_path / ".styledrop" / "dashboard-secrets.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    auth = tomllib.loads(path.read_text())["auth"]
    assert auth["client_secret"] == CLIENT_SECRET
    assert auth["redirect_uri"] == "http://127.0.0.1:8765/oauth2callback"
    assert auth["server_metadata_url"] == SIGN_IN["oidc_metadata_url"]
    # The cookie secret is the stack's own, made once, unless one is configured.
    made = (tmp_path / ".styledrop" / "cookie-secret").read_text()
    assert auth["cookie_secret"] == made and len(made) >= 32
    behind_proxy = settings.model_copy(
        update={
            "dashboard_url": "https://styledrop.example.com/",
            "signin_cookie_secret": SecretStr("c" * 40),
        }
    )
    auth = tomllib.loads(write_secrets(behind_proxy).read_text())["auth"]
    assert auth["redirect_uri"] == "https://styledrop.example.com/oauth2callback"
    assert auth["cookie_secret"] == "c" * 40
    assert write_secrets(Settings(data_dir=tmp_path)) is None
    assert not path.exists()  # sign-in turned off: no secret left behind


def test_what_it_takes_to_leave_loopback(monkeypatch) -> None:
    for host in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.2", "styledrop.example.com", ""):
        assert not is_loopback(host), host
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    assert exposure_problem(Settings(), api=True) is None
    problem = exposure_problem(Settings(host="0.0.0.0"), api=True)
    assert "PREFECT_API_AUTH_STRING" in problem and "STYLEDROP_OIDC_METADATA_URL" in problem
    # Behind a proxy on this machine the public address counts, not the interface.
    proxied = Settings(dashboard_url="https://styledrop.example.com", **SIGN_IN)
    assert "PREFECT_API_AUTH_STRING" in exposure_problem(proxied, api=True)
    assert exposure_problem(proxied, api=False) is None
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "x")
    assert exposure_problem(Settings(host="0.0.0.0", **SIGN_IN), api=True) is None
    only_auth = exposure_problem(Settings(host="0.0.0.0"), api=True)
    assert "PREFECT_API_AUTH_STRING" not in only_auth and "sign-in" in only_auth


def test_up_and_dashboard_refuse_a_network_interface_without_protection(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "STYLEDROP_"))}
    env.update(STYLEDROP_DATA_DIR=str(tmp_path), STYLEDROP_HOST="0.0.0.0")
    env["STYLEDROP_PREFECT_PORT"] = env["STYLEDROP_DASHBOARD_PORT"] = str(free_port())
    for command in (["up"], ["dashboard"]):
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", *command],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode != 0, done
        assert "Traceback" not in done.stderr
        assert "reachable from other machines" in done.stderr
        assert "STYLEDROP_OIDC_METADATA_URL" in done.stderr
    assert not (tmp_path / ".styledrop" / "prefect").exists()  # nothing started


# --- in a browser, against a real OIDC provider ------------------------------------------------


@dataclass
class SignInStack:
    url: str
    issuer: str


USERS = [
    {"sub": "alice", "email": "alice@example.com"},
    {"sub": "mallory", "email": "mallory@elsewhere.test"},
]


@pytest.fixture(scope="module")
def signin_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignInStack]:
    """`styledrop dashboard` with sign-in (only alice@example.com allowed) and the provider;
    no Prefect server: the pages say so, which is enough for who sees what."""
    if python_312() is None:
        pytest.skip("the OIDC provider (oidc-provider-mock 0.4) needs Python >= 3.12")
    tmp = tmp_path_factory.mktemp("signin")
    with oidc_provider(free_port(), USERS, tmp / "oidc.log") as issuer:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEDROP_")}
        env.update(
            STYLEDROP_DATA_DIR=str(tmp),
            STYLEDROP_PREFECT_PORT=str(free_port()),  # nothing there
            STYLEDROP_OIDC_METADATA_URL=f"{issuer}/.well-known/openid-configuration",
            STYLEDROP_OIDC_CLIENT_ID="styledrop",
            STYLEDROP_OIDC_CLIENT_SECRET=CLIENT_SECRET,
            STYLEDROP_SIGNIN_ALLOWED="alice@example.com",
        )
        log = tmp / "dashboard.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "dashboard", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:

            def healthy() -> bool:
                assert proc.poll() is None, log.read_text()
                return httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok"

            wait_until(healthy, 90, "the dashboard to answer", 0.5)
            yield SignInStack(url, issuer)
        finally:
            stop_process(proc)
        assert CLIENT_SECRET not in log.read_text()


def sign_in(driver, stack: SignInStack, subject: str) -> None:
    """Click the dashboard's Sign in, pick ``subject`` at the provider, come back."""
    click_button(driver, "Sign in")
    from selenium.webdriver.common.keys import Keys

    # Enter submits the subject's own form (Authorize), not the page's Deny form.
    find(driver, "#subject-input", 30, "the provider's sign-in form").send_keys(subject, Keys.ENTER)
    wait_until(lambda: driver.current_url.startswith(stack.url), 30, "back at the dashboard")


def only_the_sign_in_page(driver) -> bool:
    text = page_text(driver)
    return "Sign in to see the runs" in text and "Submit" not in text and "Results" not in text


@pytest.mark.slow
def test_sign_in_allow_list_and_sign_out_in_a_browser(
    signin_stack: SignInStack, browser: Browser
) -> None:
    d = browser.driver
    # Not signed in: every page is the sign-in page, nothing else.
    for path in ("/", "/submit", "/results", "/?run=00000000-0000-0000-0000-000000000000"):
        d.get(signin_stack.url + path)
        wait_until(lambda: only_the_sign_in_page(d), 30, f"only the sign-in page at {path}")

    # Someone the provider knows but the allow-list does not: refused, with a way out.
    sign_in(d, signin_stack, "mallory")
    text_appears(d, "mallory@elsewhere.test is not allowed", 30, "the refusal")
    assert "Submit" not in page_text(d)
    d.get(signin_stack.url + "/submit")
    text_appears(d, "is not allowed", 30, "the refusal on another page too")
    assert "Stylise a photo" not in page_text(d)
    click_button(d, "Sign out")
    click_button(d, "End session")  # the provider's own end-session page
    wait_until(lambda: only_the_sign_in_page(d), 30, "the sign-in page after signing out")

    # The allowed user: the pages, who is signed in, and the way out.
    sign_in(d, signin_stack, "alice")
    text_appears(d, "Signed in as alice@example.com", 30, "the signed-in bar")
    d.get(signin_stack.url + "/submit")
    text_appears(d, "Stylise a photo", 30, "the Submit page")
    click_button(d, "Sign out")
    click_button(d, "End session")
    wait_until(lambda: only_the_sign_in_page(d), 30, "the sign-in page after signing out")
    d.get(signin_stack.url + "/submit")
    wait_until(lambda: only_the_sign_in_page(d), 30, "signed out for good")
