"""The folder sensor's life cycle against a real Prefect server and real watchdog.

The deployment here is registered but deliberately not served: its runs wait in Scheduled,
and the test moves them to their final states through the real API, as a worker or the flow
would (for COMPLETED it also writes the result where the run was told to). That makes the
outcomes the sensor must handle (failed, crashed, vanished, still running, server away)
exact and fast; the real flow end to end is in test_sensor_e2e.py.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from conftest import free_port, make_image, unserved_deployment, wait_until

from flows.sensors.service import RunningSensor, start_folder_sensor
from flows.sensors.submit import PrefectGateway
from flows.sensors.take import Take
from flows.settings import Settings

DEPLOYMENT = "sensor-lifecycle/inbox"


@pytest.fixture(scope="module")
def deployment(prefect_api) -> str:
    return unserved_deployment(DEPLOYMENT)


def settings_for(data_dir: Path, **over) -> Settings:
    values = dict(
        data_dir=data_dir,
        settle_s=0.2,
        sensor_poll_s=0.3,
        sensor_rescan_s=3600,
        sensor_crash_retries=2,
        sensor_retry_max_s=1.0,
        sensor_options={"size": 48},
        default_style="mosaic",
    )
    values.update(over)
    return Settings(**values)


@pytest.fixture
def sensors(deployment) -> Iterator[list[RunningSensor]]:
    """Sensors started by a test, all stopped at its end."""
    started: list[RunningSensor] = []
    yield started
    for s in started:
        s.stop()


def start(sensors: list[RunningSensor], settings: Settings) -> RunningSensor:
    running = start_folder_sensor(settings, PrefectGateway(deployment=DEPLOYMENT))
    sensors.append(running)
    return running


def take_in(area: Path, rel: str) -> Take:
    return Take.from_json((area / f"{rel}.run.json").read_bytes())


def submitted(area: Path, rel: str) -> Take | None:
    try:
        take = take_in(area, rel)
    except (FileNotFoundError, ValueError):
        return None
    return take if take.flow_run_id else None


def submitted_from(processing: Path, inbox_rel: str) -> Take | None:
    """The submitted job for a file dropped at `inbox_rel`, whatever its processing/ name."""
    for path in processing.rglob("*.run.json"):
        rel = path.relative_to(processing).as_posix().removesuffix(".run.json")
        take = submitted(processing, rel)
        if take and take.inbox_rel == inbox_rel:
            return take
    return None


def read_run(run_id: str):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id))


def set_state(run_id: str, state) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(run_id), state, force=True)


def complete(run_id: str) -> None:
    """What the flow does on success: write the result at `output`, end COMPLETED."""
    from prefect.states import Completed

    output = Path(read_run(run_id).parameters["output"])
    make_image(output)
    set_state(run_id, Completed())


def test_drop_submit_fail_archive_with_contract_parameters(tmp_path: Path, sensors) -> None:
    from prefect.states import Failed

    start(sensors, settings_for(tmp_path))
    make_image(tmp_path / "inbox" / "ink" / "good.png")
    make_image(tmp_path / "inbox" / "bad.png", seed=1)
    processing = tmp_path / "processing"
    good = wait_until(lambda: submitted(processing, "ink/good.png"), 20, "good.png submitted")
    bad = wait_until(lambda: submitted(processing, "bad.png"), 20, "bad.png submitted")
    assert not (tmp_path / "inbox" / "ink" / "good.png").exists()

    run = read_run(good.flow_run_id)
    assert run.parameters == {
        "content": str(processing / "ink" / "good.png"),
        "styles": ["ink"],
        "options": {"size": 48},
        "output": str(tmp_path / "outputs" / "ink" / "good.png"),
        "force": False,
        "content_name": str(tmp_path / "inbox" / "ink" / "good.png"),
    }
    assert read_run(bad.flow_run_id).parameters["styles"] == ["mosaic"]  # top level: default
    # One tag for the source, the take as a label (not a tag per file), a readable name.
    assert run.tags == ["inbox"]
    assert run.labels["styledrop.take"] == good.take_id
    assert run.name == "good.png · ink"

    complete(good.flow_run_id)
    # Prefect's wording of an exception is left out of the note.
    prefect_words = "Flow run encountered an exception: engine.images.ImageError: "
    set_state(bad.flow_run_id, Failed(message=prefect_words + "cannot read image: truncated PNG"))

    wait_until(lambda: (tmp_path / "archive" / "ink" / "good.png").exists(), 20, "archived")
    wait_until(lambda: (tmp_path / "failed" / "bad.png.error.txt").exists(), 20, "failed note")
    note = (tmp_path / "failed" / "bad.png.error.txt").read_text()
    assert "cannot read image: truncated PNG" in note
    assert bad.flow_run_id in note
    assert (tmp_path / "failed" / "bad.png").exists()
    # The bookkeeping goes with the file: which run handled it stays on record.
    assert take_in(tmp_path / "archive", "ink/good.png").outcome == "archived"
    assert take_in(tmp_path / "failed", "bad.png").reason == "cannot read image: truncated PNG"
    assert not any(p.is_file() for p in processing.rglob("*"))


def test_drop_is_announced_in_the_event_feed(tmp_path: Path, sensors, prefect_api) -> None:
    start(sensors, settings_for(tmp_path))
    make_image(tmp_path / "inbox" / "announce.png", seed=7)
    take = wait_until(
        lambda: submitted(tmp_path / "processing", "announce.png"), 20, "announce.png submitted"
    )
    resource = f"styledrop.inbox.{take.content_sha256[:16]}"

    run_resource = f"prefect.flow-run.{take.flow_run_id}"

    def received() -> dict | None:
        # The session's server may hold earlier drops of the same bytes (same resource id) from
        # other tests: look for the event of this drop, the one related to this run.
        body = {
            "filter": {
                "event": {"name": ["styledrop.inbox.received"]},
                "resource": {"id": [resource]},
            },
            "limit": 50,
        }
        r = httpx.post(f"{prefect_api.api_url}/events/filter", json=body, timeout=5)
        r.raise_for_status()
        for event in r.json()["events"]:
            if any(rel["prefect.resource.id"] == run_resource for rel in event["related"]):
                return event
        return None

    event = wait_until(received, 20, "the received event related to this drop's run")
    related = {r["prefect.resource.id"]: r for r in event["related"]}
    assert related[run_resource]["prefect.resource.role"] == "flow-run"
    assert event["resource"]["prefect.resource.name"] == "announce.png"


def test_a_bad_sidecar_fails_with_its_reason_and_no_run(tmp_path: Path, sensors) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "photo.json").write_text('{"styles": ["ink", "wave"], "blend": [1]')  # no }
    make_image(inbox / "photo.png")
    start(sensors, settings_for(tmp_path))
    note = tmp_path / "failed" / "photo.png.error.txt"
    wait_until(note.exists, 20, "the error note")
    text = note.read_text()
    assert "sidecar" in text and "not valid JSON" in text
    assert "Flow run: none" in text
    assert (tmp_path / "failed" / "photo.json").exists()  # the sidecar went with it
    assert take_in(tmp_path / "failed", "photo.png").flow_run_id is None


def test_crashed_runs_are_resubmitted_a_bounded_number_of_times(tmp_path: Path, sensors) -> None:
    from prefect.states import Crashed

    start(sensors, settings_for(tmp_path, sensor_crash_retries=2))
    make_image(tmp_path / "inbox" / "crashy.png")
    processing = tmp_path / "processing"
    run_ids: list[str] = []
    for attempt in range(3):  # the first run and 2 resubmissions

        def next_run() -> str | None:
            take = submitted(processing, "crashy.png")
            return take.flow_run_id if take and take.flow_run_id not in run_ids else None

        run_ids.append(wait_until(next_run, 20, f"run {attempt + 1}"))
        set_state(run_ids[-1], Crashed(message="worker lost: out of memory"))

    note = tmp_path / "failed" / "crashy.png.error.txt"
    wait_until(note.exists, 20, "giving up after the last crash")
    assert len(set(run_ids)) == 3
    assert "worker lost: out of memory" in note.read_text()
    assert "gave up after 2 resubmission(s)" in note.read_text()
    assert take_in(tmp_path / "failed", "crashy.png").attempts == 2


def test_restart_tracks_running_runs_and_resubmits_vanished_ones(tmp_path: Path, sensors) -> None:
    from prefect import get_client
    from prefect.states import Running

    settings = settings_for(tmp_path)
    first = start(sensors, settings)
    make_image(tmp_path / "inbox" / "alive.png")
    make_image(tmp_path / "inbox" / "gone.png", seed=1)
    processing = tmp_path / "processing"
    alive = wait_until(lambda: submitted(processing, "alive.png"), 20, "alive.png submitted")
    gone = wait_until(lambda: submitted(processing, "gone.png"), 20, "gone.png submitted")
    first.stop()

    set_state(alive.flow_run_id, Running())
    with get_client(sync_client=True) as client:
        client.delete_flow_run(UUID(gone.flow_run_id))
    make_image(tmp_path / "inbox" / "while-down.png", seed=2)  # backlog

    start(sensors, settings)
    again = wait_until(
        lambda: (
            (r := submitted(processing, "gone.png")) and r.flow_run_id != gone.flow_run_id and r
        ),
        20,
        "the vanished run resubmitted",
    )
    assert again.attempts == 1
    wait_until(lambda: submitted(processing, "while-down.png"), 20, "the backlog submitted")
    # The running run is tracked again, not duplicated.
    assert take_in(processing, "alive.png").flow_run_id == alive.flow_run_id
    complete(alive.flow_run_id)
    wait_until(lambda: (tmp_path / "archive" / "alive.png").exists(), 20, "alive.png archived")
    assert (tmp_path / "outputs" / "alive.png").exists()


def test_a_file_dropped_again_after_failing_gets_a_new_run(tmp_path: Path, sensors) -> None:
    from prefect.states import Failed

    start(sensors, settings_for(tmp_path))
    src = make_image(tmp_path / "src.png", seed=3)
    (tmp_path / "inbox" / "again.png").write_bytes(src.read_bytes())
    first = wait_until(lambda: submitted(tmp_path / "processing", "again.png"), 20, "1st run")
    set_state(first.flow_run_id, Failed(message="style 'mosaic' not in the gallery"))
    wait_until((tmp_path / "failed" / "again.png").exists, 20, "first drop failed")

    # Same bytes, same place: the idempotency key finds the failed run; a person dropping
    # the file again wants it tried again, not the old failure back.
    (tmp_path / "inbox" / "again.png").write_bytes(src.read_bytes())
    second = wait_until(lambda: submitted(tmp_path / "processing", "again.png"), 20, "2nd run")
    assert second.flow_run_id != first.flow_run_id
    assert second.generation == 1
    complete(second.flow_run_id)
    wait_until((tmp_path / "archive" / "again.png").exists, 20, "second drop archived")
    assert (tmp_path / "failed" / "again.png").exists()  # the first attempt stays on record


def test_same_photo_in_two_style_folders_is_two_runs(tmp_path: Path, sensors) -> None:
    start(sensors, settings_for(tmp_path))
    data = make_image(tmp_path / "src.png", seed=4).read_bytes()
    for style in ("ink", "wave"):
        (tmp_path / "inbox" / style).mkdir(parents=True)
        (tmp_path / "inbox" / style / "same.png").write_bytes(data)
    p = tmp_path / "processing"
    ink = wait_until(lambda: submitted(p, "ink/same.png"), 20, "ink run")
    wave = wait_until(lambda: submitted(p, "wave/same.png"), 20, "wave run")
    assert ink.flow_run_id != wave.flow_run_id
    assert ink.content_sha256 == wave.content_sha256


class Gate:
    """A TCP forwarder on loopback in front of the Prefect server that can be shut (nothing
    listens: connection refused, like a server restarting) and opened again, same port."""

    def __init__(self, target: str) -> None:
        url = httpx.URL(target)
        self.target = (url.host, url.port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def open(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def shut(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_an_unreachable_server_delays_submission_without_losing_the_file(
    tmp_path: Path, sensors, prefect_api, caplog
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    caplog.set_level(logging.WARNING, logger="styledrop.sensor")
    gate = Gate(prefect_api.api_url)  # shut: nothing listens on its port yet
    with temporary_settings(updates={PREFECT_API_URL: gate.url}):
        # The sensor's worker thread runs in a copy of this context: it talks through the gate.
        start(sensors, settings_for(tmp_path))
    try:
        make_image(tmp_path / "inbox" / "patient.png")
        processing = tmp_path / "processing"
        wait_until(lambda: (processing / "patient.png.run.json").exists(), 20, "taken")
        # Several attempts fail (backoff capped at 1 s here); the file waits in processing/.
        wait_until(
            lambda: sum("submitting patient.png failed" in m for m in caplog.messages) >= 3,
            20,
            "three failed submission attempts",
        )
        take = take_in(processing, "patient.png")
        assert take.flow_run_id is None and (processing / "patient.png").exists()
        gate.open()
        take = wait_until(lambda: submitted(processing, "patient.png"), 20, "submitted once back")
        assert read_run(take.flow_run_id).parameters["content"] == str(processing / "patient.png")
    finally:
        gate.shut()


def test_names_are_never_overwritten(tmp_path: Path, sensors) -> None:
    """Two photos with one stem share a sidecar and an output name; a name already in
    archive/ gets a suffix. Nothing is overwritten, nothing is lost."""
    start(sensors, settings_for(tmp_path))
    inbox, p = tmp_path / "inbox" / "ink", tmp_path / "processing"
    inbox.mkdir(parents=True)
    (inbox / "photo.json").write_text('{"size": 40}')
    make_image(inbox / "photo.png", seed=1)
    (inbox / "photo.jpg").write_bytes(make_image(tmp_path / "x.png", seed=2).read_bytes())
    png = wait_until(lambda: submitted(p, "ink/photo.png"), 20, "photo.png submitted")
    # In processing/ it is photo-1.jpg: photo.json there is photo.png's sidecar.
    jpg = wait_until(lambda: submitted_from(p, "ink/photo.jpg"), 20, "photo.jpg submitted")
    outputs = {read_run(r.flow_run_id).parameters["output"] for r in (png, jpg)}
    assert outputs == {
        str(tmp_path / "outputs/ink/photo.png"),
        str(tmp_path / "outputs/ink/photo-1.png"),
    }
    for take in (png, jpg):  # each job kept the shared sidecar's settings
        assert read_run(take.flow_run_id).parameters["options"] == {"size": 40}
    assert not (inbox / "photo.json").exists()

    complete(png.flow_run_id)
    complete(jpg.flow_run_id)
    archive = tmp_path / "archive" / "ink"
    wait_until(lambda: len(list(archive.glob("photo*"))) == 6, 20, "both archived")
    assert sorted(x.name for x in archive.iterdir()) == sorted(
        [
            "photo.png",
            "photo.json",
            "photo.png.run.json",
            "photo-1.jpg",
            "photo-1.json",
            "photo-1.jpg.run.json",
        ]
    )

    make_image(inbox / "photo.png", seed=3)  # the same name again, new content
    again = wait_until(lambda: submitted(p, "ink/photo.png"), 20, "third submitted")
    assert read_run(again.flow_run_id).parameters["output"] == str(
        tmp_path / "outputs/ink/photo-2.png"
    )
    complete(again.flow_run_id)
    wait_until((archive / "photo-1.png").exists, 20, "archived beside, not over, the first")
    assert len(list((tmp_path / "outputs" / "ink").glob("photo*.png"))) == 3
