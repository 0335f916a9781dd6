"""The dashboard's plain-Python parts: wording and rows (views), upload checks, the sentence for
an API nothing answers at, and the flags `styledrop dashboard` gives Streamlit. (The API's
other sentences need a server: tests/test_dashboard_runs.py.)"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from conftest import free_port
from PIL import Image

from dashboard import views
from dashboard.api import APIError, PrefectAPI
from dashboard.uploads import UploadRejected, check_upload
from flows.commands.dashboard import child_env, streamlit_command
from flows.deployment import RunView


def run(state_type="RUNNING", state_name="Running", message="", **kw) -> RunView:
    return RunView(
        id=kw.pop("id", "r1"),
        name="brave-fox",
        state_type=state_type,
        state_name=state_name,
        message=message,
        **kw,
    )


# --- views -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, ""), (0.4, "0s"), (59.6, "1m 00s"), (61, "1m 01s"), (3725, "1h 02m")],
)
def test_format_duration(seconds, shown):
    assert views.format_duration(seconds) == shown


def test_style_names_shortens_paths_and_shows_blend():
    params = {
        "styles": ["mosaic", "/data/outputs/_uploads/ab12.png"],
        "options": {"style_blend": [1.0, 0.5]},
    }
    assert views.style_names(params) == "mosaic ×1, ab12 ×0.5"
    assert views.style_names({}) == "(default)"


def test_run_names_say_photo_and_styles_for_every_source():
    from flows.naming import run_name

    assert run_name({"content": "/data/processing/waves/beach.jpg"}) == "beach.jpg · default style"
    upload = {
        "content": "/o/_uploads/ab12cd/My photo.png",
        "styles": ["ink_wash", "s3://b/k/x.webp"],
    }
    assert run_name(upload) == "My photo.png · ink_wash + x"
    assert run_name({"content": "s3://bucket/processing/a%20b.png", "styles": ["mosaic"]}) == (
        "a b.png · mosaic"
    )


def test_parameters_in_words():
    words = dict(
        views.parameters_in_words(
            {
                "content": "/o/_uploads/ab/cat.png",
                "styles": ["mosaic", "waves"],
                "options": {
                    "size": 512,
                    "style_weight": 2.0,
                    "preserve_colors": True,
                    "style_blend": [1.0, 0.5],
                    "tv_weight": 0.1,
                    # As the Prefect UI's run form sends them: every field, most at default.
                    "content_weight": 1.0,
                    "pooling": "max",
                },
            }
        )
    )
    assert words["Photo"] == "cat.png"
    assert words["Styles"] == "mosaic ×1, waves ×0.5"
    assert words["Size"] == "512 px on the long edge"
    assert words["Style strength"] == "strong (×2)"
    assert words["Keep the photo's colours"] == "yes"
    assert words["Iterations"] == "the engine's default"
    assert words["Tv weight"] == "0.1"
    assert "Content weight" not in words and "Pooling" not in words
    assert not any("_uploads" in v for v in words.values())


def test_a_run_not_computing_yet_is_waiting_for_a_gpu():
    assert views.state_label(run("SCHEDULED", "Late"), {}) == "Waiting for a GPU"
    assert views.state_label(run("PENDING", "Pending"), {}) == "Waiting for a GPU"
    assert views.state_label(run(), {}) == "Waiting for a GPU"  # Running, no progress artifact
    assert views.state_label(run(), {"r1": 0.0}) == "Running"
    assert views.progress_for(run(), {}) is None


def test_run_rows_progress_and_duration():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    runs = [
        run(id="a", start_time=start, estimated_run_time=75, parameters={"options": {"size": 64}}),
        run(
            id="b",
            state_type="COMPLETED",
            state_name="Completed",
            start_time=start,
            end_time=start + timedelta(seconds=9),
        ),
    ]
    rows = views.run_rows(
        runs, {"a": 37.5}, {"a": "http://files/_jobs/x/preview.jpg"}, {"b": "http://p/in.jpg"}
    )
    assert [r["progress"] for r in rows] == [37.5, 100.0]  # completed: 100 without an artifact
    assert rows[0]["duration"] == "1m 15s" and rows[1]["duration"] == "9s"
    assert rows[0]["size"] == "64px" and rows[1]["size"] == "default"
    assert rows[0]["preview"].endswith("preview.jpg") and rows[1]["preview"] is None
    assert rows[0]["photo"] is None and rows[1]["photo"] == "http://p/in.jpg"


def test_failure_message_in_plain_words():
    assert views.failure_message(run()) is None
    assert views.failure_message(run("FAILED", "Failed", "content too small")) == (
        "The run failed: content too small"
    )
    crashed = views.failure_message(run("CRASHED", "Crashed", "process exited -9"))
    assert crashed.startswith("The run crashed") and "process exited -9" in crashed
    assert "no reason" in views.failure_message(run("FAILED", "Failed", ""))
    prefect_words = (
        "Flow run encountered an exception: JobRejected: content image /x.png is 20x20 pixels"
    )
    assert views.failure_message(run("FAILED", "Failed", prefect_words)) == (
        "The run failed: content image /x.png is 20x20 pixels"
    )
    qualified = "Flow run encountered an exception: engine.backbone.BackboneError: no weights"
    assert views.failure_message(run("FAILED", "Failed", qualified)) == (
        "The run failed: no weights"
    )


def test_state_filters_and_prefect_link():
    assert views.state_types_for([]) is None
    assert views.state_types_for(["Failed", "Waiting"]) == [
        "FAILED",
        "CRASHED",
        "SCHEDULED",
        "PENDING",
        "PAUSED",
    ]
    assert views.prefect_run_url("http://h:4200/", "abc") == "http://h:4200/runs/flow-run/abc"


@pytest.mark.parametrize(
    ("setting", "latest", "shown"),
    [
        ("random", None, True),
        ("auto", "random(seed=0)", True),
        ("auto", "vgg19-imagenet", False),
        ("vgg19", None, False),
    ],
)
def test_random_backbone_banner_decision(setting, latest, shown):
    assert views.uses_random_backbone(setting, latest) is shown


@pytest.mark.parametrize(
    ("setting", "latest", "shown"),
    [
        ("auto", "vgg16-hed", True),
        ("vgg16-hed", None, True),
        ("auto", "vgg19-imagenet", False),
        ("auto", None, False),
    ],
)
def test_trained_fallback_banner_decision(setting, latest, shown):
    assert views.uses_fallback_backbone(setting, latest) is shown


# --- uploads -----------------------------------------------------------------------------------


def encoded(fmt: str, size=(50, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (9, 99, 199)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "fmt", "ext"),
    [("a.png", "PNG", "png"), ("b.JPEG", "JPEG", "jpg"), ("c.webp", "WEBP", "webp")],
)
def test_accepts_png_jpeg_webp(name, fmt, ext):
    checked = check_upload(name, encoded(fmt), max_mb=1, max_pixels=10_000)
    assert (checked.ext, checked.width, checked.height) == (ext, 50, 40)


def test_refuses_too_many_pixels_before_decoding():
    with pytest.raises(UploadRejected, match="pixels"):
        check_upload("big.png", encoded("PNG", (200, 200)), max_mb=1, max_pixels=10_000)


def test_refuses_a_truncated_file():
    data = encoded("PNG", (60, 60))
    with pytest.raises(UploadRejected, match="could not be read as an image"):
        check_upload("cut.png", data[: len(data) // 2], max_mb=1, max_pixels=10_000)


# --- the API client's error when nothing answers -----------------------------------------------


def test_closed_port_is_a_sentence():
    api = PrefectAPI(f"http://127.0.0.1:{free_port()}/api")
    with pytest.raises(APIError, match="Cannot reach the Prefect API at http://127.0.0.1:"):
        api.runs()


# --- styledrop dashboard --------------------------------------------------------------------


def test_streamlit_is_started_without_telemetry_and_with_the_upload_limit():
    cmd = streamlit_command("127.0.0.1", 8601, 7)
    # server.py: Streamlit's own server with the file route (one port for everything).
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboard/server.py")
    assert "--server.maxUploadSize=7" in cmd
    assert "--server.port=8601" in cmd and "--server.address=127.0.0.1" in cmd
    assert not [arg for arg in cmd if arg.startswith("--secrets")]  # no sign-in configured
    env = child_env("127.0.0.1", 8601)
    assert env["STYLEDROP_DASHBOARD_PORT"] == "8601"  # preview links name this port
    assert env["STYLEDROP_HOST"] == "127.0.0.1"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"


# --- where the Prefect API is -----------------------------------------------------------------


def test_api_url_from_the_environment_else_the_local_server(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.prefect_api import api_url
    from flows.settings import Settings

    settings = Settings(host="127.0.0.1", prefect_port=4333)
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example:4200/api/")
    assert api_url(settings) == "http://prefect.example:4200/api"
    monkeypatch.delenv("PREFECT_API_URL")
    with temporary_settings(updates={PREFECT_API_URL: "http://profile.example/api"}):
        assert api_url(settings) == "http://profile.example/api"
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert api_url(settings) == "http://127.0.0.1:4333/api"
