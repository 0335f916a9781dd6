"""Prefect's API auth as styledrop uses it: `up` starts its server with the auth string and
hands it to every child; a client without it, or with a wrong one, stops with one sentence that
names PREFECT_API_AUTH_STRING (never a traceback), and the inbox keeps its files meanwhile.
The CLI checks run against a real Prefect server started with PREFECT_SERVER_API_AUTH_STRING."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, PrefectServer, make_image, start_prefect_server, stop_process

from flows.api_auth import AUTH_VARIABLE, SERVER_AUTH_VARIABLE, auth_headers, refusal

SECRET = "api-auth-Zq8vN3xK"


def status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://prefect.test:4200/api/flow_runs/filter")
    response = httpx.Response(code, request=request, json={"exception_message": "Unauthorized"})
    return httpx.HTTPStatusError("refused", request=request, response=response)


def test_a_refusal_is_one_sentence_that_names_the_variable() -> None:
    try:
        try:
            raise status_error(401)
        except httpx.HTTPStatusError as exc:
            raise RuntimeError("setting up failed") from exc
    except RuntimeError as wrapped:
        sentence = refusal(wrapped)
    assert sentence == (
        "The Prefect API at http://prefect.test:4200 refused this client's credentials: set "
        "PREFECT_API_AUTH_STRING to the auth string its server was started with."
    )
    assert refusal(ExceptionGroup("several", [ValueError("x"), status_error(403)])) == sentence
    assert refusal(status_error(500)) is None
    assert refusal(httpx.ConnectError("refused")) is None


def test_up_gives_its_server_and_every_child_the_auth_string(tmp_path: Path, monkeypatch) -> None:
    from flows.commands import up
    from flows.settings import Settings

    settings = Settings(data_dir=tmp_path)
    layout = up.Layout(settings)
    monkeypatch.delenv(AUTH_VARIABLE, raising=False)
    monkeypatch.delenv(SERVER_AUTH_VARIABLE, raising=False)
    server, children = up.plan(settings, layout)
    assert SERVER_AUTH_VARIABLE not in server.env
    assert all(AUTH_VARIABLE not in child.env for child in children)

    monkeypatch.setenv(AUTH_VARIABLE, SECRET)
    server, children = up.plan(settings, layout)
    assert server.env[SERVER_AUTH_VARIABLE] == SECRET
    assert {child.name: child.env[AUTH_VARIABLE] for child in children} == {
        "worker": SECRET,
        "watch": SECRET,
        "dashboard": SECRET,
    }
    assert SECRET not in " ".join(server.argv + [a for c in children for a in c.argv])
    assert auth_headers(SECRET) == {"Authorization": "Basic YXBpLWF1dGgtWnE4dk4zeEs="}


@pytest.fixture(scope="module")
def authed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = start_prefect_server(
        tmp_path_factory.mktemp("prefect-auth"), extra_env={SERVER_AUTH_VARIABLE: SECRET}
    )
    try:
        yield server
    finally:
        stop_process(server.proc)


def styledrop(server: PrefectServer, auth: str | None, *args: str, **env: str) -> tuple[int, str]:
    child_env = {k: v for k, v in server.env().items() if not k.startswith("STYLEDROP_")}
    child_env.pop(AUTH_VARIABLE, None)
    if auth is not None:
        child_env[AUTH_VARIABLE] = auth
    child_env.update(env)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env=child_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.slow
def test_a_worker_without_the_auth_string_says_which_variable_to_set(
    authed_server: PrefectServer,
) -> None:
    for auth in (None, "a-wrong-string"):
        code, out = styledrop(authed_server, auth, "worker", "--setup-only")
        assert code == 1, out
        assert "Traceback" not in out
        error = [line for line in out.splitlines() if "error" in line]
        assert len(error) == 1 and "PREFECT_API_AUTH_STRING" in error[0], out
        assert "refused this client's credentials" in error[0]
    code, out = styledrop(authed_server, SECRET, "worker", "--setup-only")
    assert code == 0, out
    assert SECRET not in out


@pytest.mark.slow
def test_watch_without_the_auth_string_stops_and_leaves_the_inbox_alone(
    authed_server: PrefectServer, tmp_path: Path
) -> None:
    photo = make_image(tmp_path / "inbox" / "photo.png")
    for auth in (None, "a-wrong-string"):
        code, out = styledrop(
            authed_server, auth, "watch", STYLEDROP_DATA_DIR=str(tmp_path)
        )
        assert code == 2, out
        assert "Traceback" not in out
        assert "cannot start: The Prefect API at" in out and "PREFECT_API_AUTH_STRING" in out
    assert photo.exists()
    assert not (tmp_path / "failed").exists() and not (tmp_path / "processing").exists()


@pytest.mark.slow
def test_the_sensor_keeps_a_file_waiting_while_its_credentials_are_refused(
    authed_server: PrefectServer,
) -> None:
    """Credentials are not the file's fault: the submission is retried, not failed."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows.sensors.submit import PrefectGateway, SubmitError

    updates = {PREFECT_API_URL: authed_server.api_url, PREFECT_API_AUTH_STRING: "wrong"}
    with temporary_settings(updates=updates), pytest.raises(SubmitError) as caught:
        PrefectGateway().submit({}, key="k", tags=["inbox"], name="n", take="t")
    assert caught.value.retryable
    assert "PREFECT_API_AUTH_STRING" in str(caught.value)
    assert os.environ.get(AUTH_VARIABLE) != "wrong"
