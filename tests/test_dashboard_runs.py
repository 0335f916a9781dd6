"""Runs table, run page and submitting, through AppTest against conftest's real Prefect server,
and the dashboard's sentences for what a Prefect server refuses (a second server, with auth).

The runs are made with conftest's Prefect client, not the dashboard's, and nothing serves the
deployment here: runs stay where the test puts them. Each test cancels what it left scheduled,
so a deployment served later in the session (the e2e test) does not pick them up.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from conftest import ROOT, job_record_json, make_image, start_prefect_server, stop_process
from PIL import Image
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings
from prefect.states import State
from streamlit.testing.v1 import AppTest

from dashboard.api import APIError, PrefectAPI
from flows.api_auth import refused_sentence
from flows.deployment import RunView
from flows.settings import get_settings

APP = ROOT / "dashboard" / "app.py"
TIMEOUT = 90

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def deployment_id(client: SyncPrefectClient) -> UUID:
    """A `stylize/stylize` deployment with no one serving it (idempotent by name)."""
    flow_id = client.create_flow_from_name("stylize")
    return client.create_deployment(flow_id=flow_id, name="stylize")


@pytest.fixture
def make_run(client: SyncPrefectClient, deployment_id: UUID):
    made: list[UUID] = []

    def make(styles=("mosaic",), size=64, state: State | None = None, progress=None):
        run = client.create_flow_run_from_deployment(
            deployment_id,
            parameters={
                "content": "/in/photo.png",
                "styles": list(styles),
                "options": {"size": size},
            },
        )
        made.append(run.id)
        if state is not None:
            client.set_flow_run_state(run.id, state, force=True)
        if progress is not None:
            client.create_artifact(
                ArtifactCreate(type="progress", data=float(progress), flow_run_id=run.id)
            )
        return client.read_flow_run(run.id)

    yield make
    for run_id in made:
        if not client.read_flow_run(run_id).state.is_final():
            client.set_flow_run_state(run_id, State(type=StateType.CANCELLED), force=True)


@pytest.fixture
def dash_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    storage = tmp_path / "outputs"
    styles = tmp_path / "styles"
    make_image(styles / "mosaic.png", (64, 64), seed=1)
    make_image(styles / "waves.png", (64, 64), seed=2)
    monkeypatch.setenv("STYLEDROP_STORAGE", str(storage))
    monkeypatch.setenv("STYLEDROP_STYLES_DIR", str(styles))
    monkeypatch.setenv("STYLEDROP_PREFECT_PORT", "4321")
    get_settings.cache_clear()
    yield storage
    get_settings.cache_clear()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def runs_page() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()


def rows_by_id(at: AppTest) -> dict[str, dict]:
    frame = at.dataframe[0].value
    return {row["id"]: row for row in frame.to_dict("records")}


def test_runs_table_shows_photo_state_progress_style_and_size(dash_env, make_run):
    waiting = make_run(styles=("mosaic", "waves"), size=96)
    running = make_run(state=State(type=StateType.RUNNING, name="Running"), progress=42)
    # Started, but its job has no GPU yet: no progress artifact.
    queued = make_run(state=State(type=StateType.RUNNING, name="Running"))
    failed = make_run(state=State(type=StateType.FAILED, name="Failed", message="too small"))
    at = runs_page()
    assert not at.exception and not at.error
    rows = rows_by_id(at)
    assert rows[str(waiting.id)]["state"] == "Waiting for a GPU"
    assert math.isnan(rows[str(waiting.id)]["progress"])  # an empty cell, no "0%" bar
    assert rows[str(waiting.id)]["style"] == "mosaic, waves"
    assert rows[str(waiting.id)]["size"] == "96px"
    assert rows[str(waiting.id)]["photo_name"] == "photo.png"
    assert rows[str(running.id)]["state"] == "Running"
    assert rows[str(running.id)]["progress"] == 42.0
    assert rows[str(queued.id)]["state"] == "Waiting for a GPU"
    assert math.isnan(rows[str(queued.id)]["progress"])
    assert rows[str(failed.id)]["state"] == "Failed"
    # Newest first.
    mine = {str(waiting.id), str(running.id), str(queued.id), str(failed.id)}
    order = [r for r in rows if r in mine]
    assert order == [str(failed.id), str(queued.id), str(running.id), str(waiting.id)]


def test_state_filter_narrows_the_table(dash_env, make_run):
    make_run()
    failed = make_run(state=State(type=StateType.FAILED, name="Failed", message="boom"))
    at = runs_page()
    at.pills(key="state_filter").set_value(["Failed"]).run()
    rows = rows_by_id(at)
    assert str(failed.id) in rows
    assert {r["state"] for r in rows.values()} <= {"Failed", "Crashed"}


def test_run_page_says_why_a_run_failed_and_links_to_prefect(dash_env, make_run, monkeypatch):
    # The Prefect UI as browsers reach it (a proxy's address, say), not the API's host.
    monkeypatch.setenv("PREFECT_UI_URL", "https://prefect.example.test")
    failed = make_run(
        state=State(type=StateType.FAILED, name="Failed", message="content image is 20x20")
    )
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = str(failed.id)
    at.run()
    assert not at.exception
    assert "The run failed: content image is 20x20" in texts(at.error)
    assert not [b for b in at.button if b.key == "cancel"]  # nothing to cancel
    [link] = at.link_button
    assert link.proto.url == f"https://prefect.example.test/runs/flow-run/{failed.id}"


def test_cancel_button_cancels_a_waiting_run(dash_env, make_run, client):
    waiting = make_run()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = str(waiting.id)
    at.run()
    assert not at.exception
    at.button(key="cancel").click().run()
    assert "Asked Prefect to stop the run" in texts(at.success)
    assert client.read_flow_run(waiting.id).state.type == StateType.CANCELLED


def test_submit_stores_the_upload_and_creates_a_run(dash_env, deployment_id, client):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("screens/submit.py").run()
    buf = io.BytesIO()
    Image.new("RGB", (64, 40), (200, 30, 60)).save(buf, "PNG")
    at.file_uploader(key="content").set_value(("photo.png", buf.getvalue(), "image/png"))
    at.run()
    at.checkbox(key="style_mosaic").check()
    at.checkbox(key="style_waves").check()
    at.run()
    at.slider(key="blend_1_waves").set_value(0.5)
    at.number_input(key="size").set_value(48)
    at.number_input(key="iterations").set_value(7)
    at.run()
    at.button(key="submit").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)

    run_id = at.query_params.get("run")
    assert run_id, "submitting should open the new run's page"
    run = client.read_flow_run(UUID(run_id))
    try:
        assert run.deployment_id == deployment_id
        params = run.parameters
        assert params["styles"] == ["mosaic", "waves"]
        assert params["options"]["size"] == 48
        assert params["options"]["style_blend"] == [1.0, 0.5]
        assert params["options"]["iterations"] == 7
        content = Path(params["content"])
        # Content-addressed folder, the person's own file name.
        assert content.parent.parent == dash_env / "_uploads" and content.name == "photo.png"
        assert content.read_bytes() == buf.getvalue()
        # Named the way the flow names every run, and tagged with its source only.
        assert run.name == "photo.png · mosaic + waves"
        assert run.tags == ["dashboard"]
    finally:
        client.set_flow_run_state(run.id, State(type=StateType.CANCELLED), force=True)


def test_cancel_of_a_running_run_asks_it_to_stop(dash_env, make_run, client):
    running = make_run(state=State(type=StateType.RUNNING, name="Running"))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = str(running.id)
    at.run()
    at.button(key="cancel").click().run()
    assert "now Cancelling" in texts(at.success)
    # Cancelling, not Cancelled: the runner serving it does the stopping.
    assert client.read_flow_run(running.id).state.type == StateType.CANCELLING


def test_run_page_of_a_finished_job_shows_result_and_downloads(dash_env, make_run):
    done = make_run(state=State(type=StateType.COMPLETED, name="Completed"))
    job_id = "0123456789abcdef"
    folder = dash_env / "_jobs" / job_id
    folder.mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(buf, "PNG")
    (folder / "result.png").write_bytes(buf.getvalue())
    record = job_record_json(job_id, "completed", backbone="vgg19-imagenet", steps=6)
    (folder / "record.json").write_bytes(record)
    (dash_env / "_runs").mkdir()
    (dash_env / "_runs" / f"{done.id}.json").write_text(
        json.dumps({"job_id": job_id, "record": f"_jobs/{job_id}/record.json"})
    )
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = str(done.id)
    at.run()
    assert not at.exception and not at.error
    [bar] = at.get("progress")
    assert (bar.proto.value, bar.proto.text) == (100, "100%")
    downloads = {b.key: b for b in at.download_button}
    assert set(downloads) == {"download_result", "download_record"}
    assert not [b for b in at.button if b.key == "cancel"]
    # The photo (not there: nothing made its copy), the style and the result side by side.
    assert [i.proto.imgs[0].caption for i in at.image] == ["Style: mosaic", "Result"]
    assert "Photo: photo.png" in texts(at.caption)
    words = texts(at.markdown)
    assert "**Size:** 64 px on the long edge" in words and "photo.png" in words


def submit_a_photo_in_mosaic() -> AppTest:
    """The Submit page with a small photo uploaded, the mosaic style ticked, Submit clicked."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("screens/submit.py").run()
    buf = io.BytesIO()
    Image.new("RGB", (64, 40), (1, 2, 3)).save(buf, "PNG")
    at.file_uploader(key="content").set_value(("photo.png", buf.getvalue(), "image/png"))
    at.run()
    at.checkbox(key="style_mosaic").check().run()
    at.button(key="submit").click().run()
    return at


def test_submit_with_the_api_down_keeps_the_upload_and_says_why(dash_env, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    at = submit_a_photo_in_mosaic()
    assert not at.exception
    assert "Could not start the run: Cannot reach the Prefect API" in texts(at.error)
    assert at.file_uploader(key="content").value is not None  # nothing lost; try again later


def test_submit_with_unwritable_storage_says_why(dash_env, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    monkeypatch.setenv("STYLEDROP_STORAGE", str(blocker / "outputs"))
    get_settings.cache_clear()
    at = submit_a_photo_in_mosaic()
    assert not at.exception
    assert "Could not store the photo: Could not save the upload" in texts(at.error)


def test_run_page_of_a_running_job_shows_the_latest_preview(dash_env, make_run):
    running = make_run(state=State(type=StateType.RUNNING, name="Running"), progress=60)
    job_id = "fedcba9876543210"
    folder = dash_env / "_jobs" / job_id
    folder.mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "JPEG")
    (folder / "preview.jpg").write_bytes(buf.getvalue())
    (folder / "input.jpg").write_bytes(buf.getvalue())
    (folder / "record.json").write_bytes(job_record_json(job_id, "running"))
    (dash_env / "_runs").mkdir()
    (dash_env / "_runs" / f"{running.id}.json").write_text(json.dumps({"job_id": job_id}))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = str(running.id)
    at.run()
    assert not at.exception and not at.error
    [bar] = at.get("progress")
    assert (bar.proto.value, bar.proto.text) == (60, "60%")
    captions = [i.proto.imgs[0].caption for i in at.image]
    assert captions == ["Photo: photo.png", "Style: mosaic", "Latest preview"]
    assert not at.download_button  # nothing to download yet
    assert at.button(key="cancel")


def test_a_cancel_prefect_refuses_says_why(make_run, client, prefect_api):
    running = make_run(state=State(type=StateType.RUNNING, name="Running"))
    seen = RunView.of(running)  # the page as drawn; the run finishes before the click
    client.set_flow_run_state(running.id, State(type=StateType.COMPLETED), force=True)
    api = PrefectAPI(prefect_api.api_url)
    with pytest.raises(APIError, match="did not accept the cancel request: .*terminal state"):
        api.cancel(seen)
    with pytest.raises(APIError, match="nothing to cancel"):
        api.cancel(RunView.of(client.read_flow_run(running.id)))
    with pytest.raises(APIError, match="There is no flow run with id 'nope'"):
        api.run("nope")


def test_what_a_server_refuses_reads_as_a_sentence(tmp_path):
    """A server of its own, with an auth string and no deployment: the dashboard without the
    string, with it, and after the server stopped."""
    server = start_prefect_server(
        tmp_path / "prefect", extra_env={"PREFECT_SERVER_API_AUTH_STRING": "open sesame"}
    )
    try:
        with pytest.raises(APIError) as refused:
            PrefectAPI(server.api_url).runs()
        assert str(refused.value) == refused_sentence(server.api_url)
        assert "PREFECT_API_AUTH_STRING" in str(refused.value)
        with temporary_settings(updates={PREFECT_API_AUTH_STRING: "open sesame"}):
            api = PrefectAPI(server.api_url)
        assert api.runs() == []
        with pytest.raises(APIError, match="Start `styledrop worker`"):
            api.create_run({"content": "/in/photo.png"})
    finally:
        stop_process(server.proc)
    # Prefect's client retries a lost connection with a minute of back-off; the dashboard
    # says so at once and asks again at its next refresh.
    started = time.monotonic()
    with pytest.raises(APIError, match="Cannot reach the Prefect API"):
        api.runs()
    assert time.monotonic() - started < 10


def test_a_signed_in_submitter_is_recorded_as_a_tag_and_shown(
    dash_env, deployment_id, client, prefect_api
):
    """With sign-in the Submit page passes the user's e-mail (dashboard/signin.py); the run
    carries it as a tag the Prefect UI shows, and the run page says who it was."""
    run = PrefectAPI(prefect_api.api_url).create_run(
        {"content": "/in/photo.png", "styles": ["mosaic"]}, submitter="alice@example.com"
    )
    try:
        assert sorted(client.read_flow_run(UUID(run.id)).tags) == [
            "dashboard",
            "submitter:alice@example.com",
        ]
        assert run.submitter == "alice@example.com"
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        at.query_params["run"] = run.id
        at.run()
        assert "Submitted by alice@example.com" in texts(at.caption)
    finally:
        client.set_flow_run_state(UUID(run.id), State(type=StateType.CANCELLED), force=True)


def test_files_refused_before_a_run_are_listed_with_their_reason(dash_env, make_run, prefect_api):
    """The inbox sensor refuses a bad file without making a run; the Runs page lists it from
    the sensor's own event (through the sensor's gateway, on the real server), but not a
    failure that has a run (the table shows that one)."""
    from conftest import drain_prefect_workers, wait_until

    from flows.sensors.submit import PrefectGateway

    tag = uuid4().hex[:8]
    refused, with_run = f"notes-{tag}.jpg", f"photo-{tag}.jpg"
    reason = f"{refused} cannot be used: not an image that can be read"
    gateway = PrefectGateway()
    run = RunView.of(make_run(state=State(type=StateType.FAILED, name="Failed")))
    for path, about in ((refused, None), (with_run, run)):
        gateway.emit(
            "styledrop.inbox.failed",
            content_sha256=uuid4().hex * 2,
            inbox_rel=path,
            root="/data",
            run=about,
            payload={"path": path, "reason": reason},
        )
    drain_prefect_workers()
    api = PrefectAPI(prefect_api.api_url)
    try:
        listed = wait_until(
            lambda: [r for r in api.refusals() if tag in r.path], 30, "the refusal event"
        )
    finally:
        api.close()
    assert [(r.path, r.reason) for r in listed] == [(refused, reason)]

    def shown(at: AppTest) -> str:
        return "\n".join(str(frame.value.to_dict("records")) for frame in at.dataframe)

    at = runs_page()
    assert not at.exception and not at.error
    assert refused in shown(at) and reason in shown(at) and with_run not in shown(at)
    assert "Refused before a run" in texts(at.markdown)
    at.pills(key="state_filter").set_value(["Completed"]).run()
    assert refused not in shown(at)
