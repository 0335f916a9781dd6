"""The dashboard's pages through Streamlit's AppTest: what a person sees for a given state of
the Prefect API and the storage. The Prefect-backed tests use conftest's real server, with the
runs made through Prefect's own client (not the dashboard's), so the two are checked against
each other."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from conftest import ROOT, free_port, job_record_json, make_image
from PIL import Image
from streamlit.testing.v1 import AppTest

from flows.settings import get_settings

APP = ROOT / "dashboard" / "app.py"
# The first upload check imports the engine (torch): seconds on a busy 2-core machine.
TIMEOUT = 90


def png_bytes(size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    """A small PNG with some structure (a gradient), encoded in memory."""
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([((x * 7 + seed) % 256, (y * 5) % 256, 90) for y in range(h) for x in range(w)])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def dash_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Fresh storage and a two-style gallery; settings re-read from the environment."""
    storage = tmp_path / "outputs"
    styles = tmp_path / "styles"
    make_image(styles / "mosaic.png", (64, 64), seed=1)
    make_image(styles / "waves.png", (64, 64), seed=2)
    monkeypatch.setenv("STYLEDROP_STORAGE", str(storage))
    monkeypatch.setenv("STYLEDROP_STYLES_DIR", str(styles))
    get_settings.cache_clear()
    yield storage
    get_settings.cache_clear()


def app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def write_job(
    storage: Path, job_id: str, status: str, backbone: str | None = "random(seed=0)"
) -> None:
    folder = storage / "_jobs" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    if status == "completed":
        (folder / "result.png").write_bytes(png_bytes((80, 60)))
    record = job_record_json(
        job_id,
        status,
        backbone=backbone,
        device="cpu",
        timings={
            "started_at": "2026-01-02T03:04:00+00:00",
            "finished_at": "2026-01-02T03:04:05+00:00",
        },
    )
    (folder / "record.json").write_bytes(record)


# --- the API is down ---------------------------------------------------------------------------


def test_unreachable_api_is_a_message_not_a_traceback(dash_env, monkeypatch):
    closed = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", closed)
    at = app().run()
    assert not at.exception
    assert "Cannot reach the Prefect API at " + closed in texts(at.error)
    # The run page too.
    at.query_params["run"] = "3f0a3c4e-1d2b-4c5d-8e9f-001122334455"
    at.run()
    assert not at.exception
    assert "Could not load the run: Cannot reach the Prefect API" in texts(at.error)


# --- Submit page validation -------------------------------------------------------------------


def submit_page() -> AppTest:
    at = app().run()
    return at.switch_page("screens/submit.py").run()


def test_submit_rejects_a_file_that_is_too_big(dash_env, monkeypatch):
    monkeypatch.setenv("STYLEDROP_MAX_UPLOAD_MB", "1")
    get_settings.cache_clear()
    at = submit_page()
    big = png_bytes() + b"\0" * (1024 * 1024)
    at.file_uploader(key="content").set_value(("huge.png", big, "image/png"))
    at.run()
    assert not at.exception
    assert "the limit is 1 MB" in texts(at.error)
    assert at.button(key="submit").disabled


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("notes.txt", b"hello", "is not a PNG, JPEG or WebP file (.txt)"),
        ("anim.gif", b"GIF89a....", "is not a PNG, JPEG or WebP file (.gif)"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "could not be read as an image"),
    ],
)
def test_submit_rejects_wrong_type_and_undecodable(dash_env, name, data, words):
    at = submit_page()
    at.file_uploader(key="content").set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception
    assert words in texts(at.error)
    assert at.button(key="submit").disabled


def test_submit_rejects_a_photo_below_the_minimum_side(dash_env):
    at = submit_page()
    at.file_uploader(key="content").set_value(("tiny.png", png_bytes((20, 20)), "image/png"))
    at.run()
    assert "short side must be at least 32 px" in texts(at.error)


def test_submit_needs_a_style_and_offers_blend_weights(dash_env):
    at = submit_page()
    at.file_uploader(key="content").set_value(("photo.png", png_bytes(), "image/png"))
    at.run()
    assert not at.error
    assert at.button(key="submit").disabled
    assert "Pick at least one style" in texts(at.caption)
    at.checkbox(key="style_mosaic").check().run()
    assert not at.button(key="submit").disabled
    assert not at.slider  # one style: nothing to blend
    at.checkbox(key="style_waves").check().run()
    assert [s.label for s in at.slider] == ["mosaic", "waves"]


# --- Results page ------------------------------------------------------------------------------


def test_results_offers_downloads_for_finished_jobs_only(dash_env):
    write_job(dash_env, "a" * 16, "completed")
    write_job(dash_env, "b" * 16, "running")
    at = app().run()
    at.switch_page("screens/results.py").run()
    assert not at.exception
    assert not at.error
    keys = {b.key for b in at.download_button}
    assert keys == {f"result_{'a' * 16}", f"record_{'a' * 16}"}
    assert len(at.image) == 1


def test_results_with_nothing_finished_says_so(dash_env):
    at = app().run()
    at.switch_page("screens/results.py").run()
    assert "No finished results yet" in texts(at.info)


# --- the random-backbone banner ------------------------------------------------------------


def test_banner_follows_the_setting_and_the_latest_record(dash_env, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    monkeypatch.setenv("STYLEDROP_BACKBONE", "random")
    get_settings.cache_clear()
    assert "Random backbone" in texts(app().run().warning)

    monkeypatch.setenv("STYLEDROP_BACKBONE", "auto")
    get_settings.cache_clear()
    assert "Random backbone" not in texts(app().run().warning)

    # auto, but the weights were missing: the latest record says what was really used.
    write_job(dash_env, "c" * 16, "completed", backbone="random(seed=0)")
    st.cache_data.clear()  # the page caches the latest record's backbone for 30 s
    warning = texts(app().run().warning)
    assert "Random backbone" in warning
    assert "vgg19-dcbb9e9d.pth" in warning and "STYLEDROP_WEIGHTS" in warning

    # A newer job that is still starting names no backbone yet: the banner stays.
    write_job(dash_env, "d" * 16, "running", backbone=None)
    later = time.time() + 5
    os.utime(dash_env / "_jobs" / ("d" * 16) / "record.json", (later, later))
    st.cache_data.clear()
    assert "Random backbone" in texts(app().run().warning)


def test_results_caption_names_the_default_size(dash_env):
    write_job(dash_env, "e" * 16, "completed")
    path = dash_env / "_jobs" / ("e" * 16) / "record.json"
    record = json.loads(path.read_text())
    record["params"]["size"] = None  # the engine's default for the device
    path.write_text(json.dumps(record))
    at = app().run()
    at.switch_page("screens/results.py").run()
    captions = texts(at.caption)
    assert "mosaic · default size ·" in captions and "None" not in captions
