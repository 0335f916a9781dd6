"""`styledrop stylize` end to end on tiny images with the random backbone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_image
from PIL import Image

from engine import read_metadata
from flows.cli import main
from flows.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("STYLEDROP_STYLES_DIR", str(tmp_path / "gallery"))
    monkeypatch.setenv("STYLEDROP_BACKBONE", "random")
    monkeypatch.setenv("STYLEDROP_DEVICE", "cpu")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


FAST = ["--size", "40", "--iterations", "3", "--quiet"]


@pytest.fixture(autouse=True, scope="module")
def _torch_on_one_thread(one_thread):
    """Every engine run in this module on one thread (conftest.one_thread says why)."""


def test_writes_a_png_with_metadata(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    content = make_image(tmp_path / "photo.jpg", (48, 40))
    style = make_image(tmp_path / "s1.png", (40, 40), seed=1)
    make_image(tmp_path / "gallery" / "waves.webp", (40, 40), seed=2)  # by gallery name
    out = tmp_path / "out" / "result.png"
    rc = main(
        ["stylize", str(content), "--style", str(style), "--style", "waves"]
        + ["--style-weights", "0.7,0.3", "--seed", "5", "--backbone", "random"]
        + ["--out", str(out), *FAST]
    )
    assert rc == 0, capsys.readouterr().err
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (40, 33)
    meta = read_metadata(out)
    assert meta["backbone"] == "random(seed=0)"
    assert meta["seed"] == 5
    assert meta["params"]["style_blend"] == [0.7, 0.3]
    assert meta["params"]["size"] == 40
    assert meta["styles"][1].endswith("waves.webp")
    assert {"torch", "pillow"} <= set(meta["versions"])
    assert str(out) in capsys.readouterr().out


def test_non_image_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_text("not really a picture\n")
    style = make_image(tmp_path / "s.png", (40, 40))
    rc = main(["stylize", str(bogus), "--style", str(style), "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert err.startswith("styledrop: error: ") and "not an image" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--style", "nosuchstyle"], "neither a file nor a gallery style"),
        (["--style", "s.png", "--style-weights", "1,2"], "2 values for 1 --style"),
        (["--style", "s.png", "--out", "o.gif"], "extension"),
        (["--style", "s.png", "--backbone", "vgg19", "--weights", "nope.pth"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    make_image(tmp_path / "c.png", (48, 40))
    make_image(tmp_path / "s.png", (40, 40))
    rc = main(["stylize", "c.png", *extra, *FAST])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert err.startswith("styledrop: error: ") and message in err, err
    assert len(err.splitlines()) == 1


def test_importing_the_command_does_not_import_prefect() -> None:
    code = "import sys, flows.commands.stylize; print('prefect' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("fallback_installed", "warning", "label"),
    [
        (True, "trained fallback 'vgg16-hed'", "vgg16-hed"),
        (False, "RANDOM backbone", "random(seed=0)"),
    ],
)
def test_auto_backbone_without_weights_warns_once_and_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    fallback_installed: bool,
    warning: str,
    label: str,
) -> None:
    from engine import backbone

    def offline() -> dict:
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(backbone, "_download_state", offline)
    if not fallback_installed:
        monkeypatch.setattr(backbone, "hed_weights_file", lambda: None)
    backbone.clear_cache()
    content = make_image(tmp_path / "c.png", (48, 40))
    style = make_image(tmp_path / "s.png", (40, 40), seed=1)
    out = tmp_path / "o.png"
    rc = main(["stylize", str(content), "--style", str(style), "--backbone", "auto"]
              + ["--out", str(out), *FAST])  # fmt: skip
    err = capsys.readouterr().err
    backbone.clear_cache()
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if warning in line]
    assert len(warnings) == 1 and warnings[0].startswith("styledrop: warning: ")
    assert "hub/checkpoints/vgg19-dcbb9e9d.pth" in warnings[0]
    assert read_metadata(out)["backbone"] == label


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0
    assert re.fullmatch(r"styledrop \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


def test_without_a_terminal_one_summary_line_and_no_bar(tmp_path: Path) -> None:
    """Output to a file or a pipe (a log, CI): no progress-bar frames, one line on success."""
    content = make_image(tmp_path / "photo.jpg", (48, 40))
    style = make_image(tmp_path / "s1.png", (40, 40), seed=1)
    out = tmp_path / "result.png"
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "stylize", str(content), "--style", str(style)]
        + ["--size", "40", "--iterations", "12", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "step" not in done.stderr and "\r" not in done.stderr  # no bar frames
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{out}  (40x33, 12 steps in ")


def test_on_a_terminal_a_progress_bar(tmp_path: Path) -> None:
    """A pseudo-terminal on stderr: the bar is drawn there."""
    import fcntl
    import pty
    import struct
    import termios

    content = make_image(tmp_path / "photo.jpg", (48, 40))
    style = make_image(tmp_path / "s1.png", (40, 40), seed=1)
    leader, follower = pty.openpty()
    # 24 rows, 100 columns: a new pty is 0x0, and a bar fitted to no columns draws nothing.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "stylize", str(content), "--style", str(style)]
        + ["--size", "40", "--iterations", "12", "--out", str(tmp_path / "r.png")],
        stdout=subprocess.PIPE,
        stderr=follower,
        cwd=ROOT,
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    assert proc.wait(120) == 0
    os.close(leader)
    assert b"12/12" in drawn and b"step" in drawn
