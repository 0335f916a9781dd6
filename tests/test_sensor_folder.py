"""When the folder inbox considers a file complete: real watchdog (inotify) on a temporary
folder, no Prefect. ``FolderInbox.poll`` is what the sensor's worker thread calls."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_image, wait_until

from flows.sensors.folder import FolderInbox


class Collector:
    """Polls the inbox like the sensor's worker does and remembers what became ready."""

    def __init__(self, inbox: FolderInbox) -> None:
        self.inbox = inbox
        self.ready: list[str] = []

    def poll(self) -> list[str]:
        self.ready += self.inbox.poll(time.monotonic())
        return self.ready

    def stays_empty_for(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.poll():
                return False
            time.sleep(0.05)
        return True


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[tuple[Path, Collector]]:
    inbox_dir = tmp_path / "inbox"
    inbox = FolderInbox(inbox_dir, settle_s=0.5, rescan_s=3600)
    inbox.start()
    try:
        yield inbox_dir, Collector(inbox)
    finally:
        inbox.stop()


def test_a_closed_file_is_taken_without_waiting_for_the_settle_time(tmp_path: Path) -> None:
    inbox_dir = tmp_path / "inbox"
    # The folder exists before the watch starts: a file written the instant its folder
    # appears can be closed before inotify watches that folder, and then only the timer
    # (or /proc) can tell, which is not what this test is about.
    (inbox_dir / "ink").mkdir(parents=True)
    inbox = FolderInbox(inbox_dir, settle_s=30, rescan_s=3600)  # the timer alone: 30 s
    inbox.start()
    try:
        c = Collector(inbox)
        make_image(inbox_dir / "ink" / "photo.png")
        assert wait_until(c.poll, 5, "the closed file to be ready") == ["ink/photo.png"]
    finally:
        inbox.stop()


def test_a_slow_writer_is_not_taken_while_its_file_is_open(watch) -> None:
    inbox_dir, c = watch
    data = (Path(make_image(inbox_dir.parent / "src.png", size=(64, 64)))).read_bytes()
    chunks = [data[i : i + len(data) // 4 + 1] for i in range(0, len(data), len(data) // 4 + 1)]
    with open(inbox_dir / "slow.png", "wb") as f:
        for chunk in chunks:
            f.write(chunk)
            f.flush()
            # Pauses longer than settle_s: only the open handle says "not done yet".
            assert c.stays_empty_for(0.8), "taken while still being written"
    assert wait_until(c.poll, 5, "the file to be ready once closed") == ["slow.png"]
    assert (inbox_dir / "slow.png").read_bytes() == data


def test_backlog_files_settle_by_size_when_no_events_come(tmp_path: Path) -> None:
    inbox_dir = tmp_path / "inbox"
    make_image(inbox_dir / "old.png")  # dropped while no sensor was running
    make_image(inbox_dir / "mosaic" / "older.png")
    inbox = FolderInbox(inbox_dir, settle_s=1.0, rescan_s=3600)
    started = time.monotonic()
    inbox.start()
    try:
        c = Collector(inbox)
        wait_until(lambda: len(c.poll()) == 2, 5, "both backlog files")
        assert time.monotonic() - started >= 1.0, "taken before holding still for settle_s"
        assert sorted(c.ready) == ["mosaic/older.png", "old.png"]
    finally:
        inbox.stop()


def test_partial_names_wait_for_the_rename(watch) -> None:
    inbox_dir, c = watch
    image = make_image(inbox_dir.parent / "download.png").read_bytes()
    (inbox_dir / "photo.png.crdownload").write_bytes(image)
    (inbox_dir / "~$lock.png").write_bytes(b"x")
    (inbox_dir / ".hidden.png").write_bytes(b"x")
    (inbox_dir / "README.md").write_text("hello")
    (inbox_dir / "photo.json").write_text("{}")
    assert c.stays_empty_for(1.2)
    os.rename(inbox_dir / "photo.png.crdownload", inbox_dir / "photo.png")
    assert wait_until(c.poll, 5, "the renamed download") == ["photo.png"]


def test_a_folder_moved_in_brings_its_files(watch, tmp_path: Path) -> None:
    inbox_dir, c = watch
    staged = tmp_path / "staged" / "ink"
    make_image(staged / "a.png")
    make_image(staged / "b.png", seed=1)
    os.rename(staged, inbox_dir / "ink")  # one event for the folder, none for its files
    wait_until(lambda: len(c.poll()) == 2, 5, "both files of the moved folder")
    assert sorted(c.ready) == ["ink/a.png", "ink/b.png"]


def test_a_photo_waits_for_its_sidecar_to_be_complete(watch) -> None:
    inbox_dir, c = watch
    with open(inbox_dir / "photo.json", "w") as side:
        side.write('{"size": ')
        side.flush()
        make_image(inbox_dir / "photo.png")  # complete, but its sidecar is still open
        assert c.stays_empty_for(1.2)
        side.write("48}")
    assert wait_until(c.poll, 5, "the photo once its sidecar is closed") == ["photo.png"]


def test_a_file_open_before_the_sensor_started_waits_for_its_writer(tmp_path: Path) -> None:
    """No open event was ever seen (the writer began before the watch): /proc tells that
    the file is still open for writing, and the close then takes it."""
    inbox_dir = tmp_path / "inbox" / "new-folder"
    inbox_dir.mkdir(parents=True)
    data = make_image(tmp_path / "src.png", size=(64, 64)).read_bytes()
    half = len(data) // 2
    with open(inbox_dir / "early.png", "wb") as f:
        f.write(data[:half])
        f.flush()
        inbox = FolderInbox(tmp_path / "inbox", settle_s=0.3, rescan_s=3600)
        inbox.start()
        c = Collector(inbox)
        try:
            assert c.stays_empty_for(1.5), "taken while its writer still had it open"
            f.write(data[half:])
            f.flush()
            assert c.stays_empty_for(1.0)
        except BaseException:
            inbox.stop()
            raise
    try:
        assert wait_until(c.poll, 5, "the file once closed") == ["new-folder/early.png"]
    finally:
        inbox.stop()


def test_an_empty_file_waits_a_few_settle_times_after_its_close(tmp_path: Path) -> None:
    """A closed empty file is taken after 5 settle times (then refused as not an image, in
    seconds); one never seen closed waits as long as any file whose close was missed."""
    from flows.sensors.settle import Settler

    now = [0.0]
    settler = Settler(1.0, clock=lambda: now[0])
    closed, silent = tmp_path / "closed.jpg", tmp_path / "silent.jpg"
    closed.write_bytes(b"")
    silent.write_bytes(b"")
    settler.seen(str(closed))
    settler.closed(str(closed), wrote=True)
    settler.seen(str(silent))
    assert settler.due() == []
    now[0] = 4.9
    assert settler.due() == []
    now[0] = 5.1
    assert settler.due() == [str(closed)]
    now[0] = 29.0
    assert settler.due() == []
    now[0] = 30.1
    assert settler.due() == [str(silent)]
