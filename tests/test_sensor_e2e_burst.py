"""Inbox sensor end to end, a burst: 20 files dropped at once. Its own module so that it runs
in parallel with the other end-to-end tests (it is the longest). The stack: sensor_stack.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_image, wait_until
from sensor_stack import TINY, files, inbox_runs, png_size

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.mark.timeout(900)
def test_twenty_files_dropped_at_once_are_each_stylised_exactly_once(watch, tmp_path: Path) -> None:
    watch().start()
    names = [f"{style}/img{i:02d}.png" for i, style in enumerate(["mosaic", "waves"] * 10)]
    for i, name in enumerate(names):
        make_image(tmp_path / "inbox" / name, seed=i)
    archive, outputs = tmp_path / "archive", tmp_path / "outputs"

    def archived() -> bool:
        if (tmp_path / "failed").exists() and files(tmp_path / "failed"):
            raise AssertionError(f"failed: {files(tmp_path / 'failed')}")
        return len([f for f in files(archive) if f.endswith(".png")]) == 20

    wait_until(archived, 840, "20 originals in archive/", 1.0)
    assert sorted(f for f in files(archive) if f.endswith(".png")) == sorted(names)
    for name in names:
        assert png_size((outputs / name).read_bytes())[0] == TINY["size"]  # long edge
    runs = inbox_runs(str(tmp_path / "processing"))
    assert len(runs) == 20  # one run per file: no duplicates, none missing
    assert len({r.parameters["content"] for r in runs}) == 20
    assert {r.state.type.value for r in runs} == {"COMPLETED"}
    assert not [f for f in files(tmp_path / "processing") if not f.endswith("/")]
