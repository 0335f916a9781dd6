"""The sensor against a real Prefect server: what the fast life-cycle tests
(test_sensor_lifecycle.py) fake. PrefectGateway creates one run per idempotency key with the
parameters, tag, label and name it was given and announces drops in the event feed; the running
folder sensor (its thread, real watchdog) resubmits a crashed run and archives the file; and it
keeps a file waiting while the server is unreachable.

The deployment is registered but deliberately not served: its runs wait in Scheduled, and the
test moves them to their final states through the real API, as a worker or the flow would (for
COMPLETED it also writes the result where the run was told to). The real flow end to end is in
test_sensor_e2e.py.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from conftest import free_port, make_image, unserved_deployment, wait_until

from flows.sensors.service import RunningSensor, start_folder_sensor
from flows.sensors.submit import TAKE_LABEL, PrefectGateway, SubmitError
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


def test_the_gateway_makes_one_run_per_key_and_announces_drops(deployment, prefect_api) -> None:
    gateway = PrefectGateway(deployment=DEPLOYMENT)
    parameters = {"content": "/data/processing/a.png", "styles": ["ink"], "options": {}}
    key = f"styledrop-inbox:{uuid.uuid4().hex}:g0:a0"
    run = gateway.submit(parameters, key=key, tags=["inbox"], name="a.png · ink", take="t1")
    # The same key again (a retried request, a restarted sensor): the same run, whose label
    # still names the take that made it.
    again = gateway.submit(parameters, key=key, tags=["inbox"], name="a.png · ink", take="t2")
    assert again.id == run.id and again.labels[TAKE_LABEL] == "t1"
    other = gateway.submit(parameters, key=key + "x", tags=["inbox"], name="a", take="t3")
    assert other.id != run.id

    flow_run = read_run(run.id)
    assert flow_run.parameters == parameters
    assert flow_run.tags == ["inbox"]  # the source only, nothing per file
    assert flow_run.name == "a.png · ink"
    assert (run.state_type, run.state_name) == ("SCHEDULED", "Scheduled")

    missing = str(uuid.uuid4())
    found = gateway.read_runs([run.id, missing])
    assert list(found) == [run.id] and found[run.id].parameters == parameters
    assert gateway.run_url(run.id).endswith(f"/runs/flow-run/{run.id}")

    sha = uuid.uuid4().hex * 2
    gateway.emit(
        "styledrop.inbox.received",
        content_sha256=sha,
        inbox_rel="ink/a.png",
        root="/data",
        run=run,
        payload={"path": "ink/a.png"},
    )

    def received() -> dict | None:
        body = {"filter": {"resource": {"id": [f"styledrop.inbox.{sha[:16]}"]}}, "limit": 5}
        r = httpx.post(f"{prefect_api.api_url}/events/filter", json=body, timeout=5)
        r.raise_for_status()
        return next(iter(r.json()["events"]), None)

    event = wait_until(received, 20, "the received event")
    assert event["event"] == "styledrop.inbox.received"
    assert event["resource"]["prefect.resource.name"] == "ink/a.png"
    related = {r["prefect.resource.id"]: r for r in event["related"]}
    assert related[f"prefect.flow-run.{run.id}"]["prefect.resource.role"] == "flow-run"


def test_a_missing_deployment_is_a_retryable_submit_error(prefect_api) -> None:
    gateway = PrefectGateway(deployment="no-such-flow/no-such-deployment")
    with pytest.raises(SubmitError, match="not found: is a `styledrop worker`") as caught:
        gateway.submit({}, key=uuid.uuid4().hex, tags=[], name="x", take="t")
    assert caught.value.retryable


def test_a_crashed_run_is_resubmitted_and_the_file_archived(tmp_path: Path, sensors) -> None:
    from prefect.states import Crashed

    start(sensors, settings_for(tmp_path))
    make_image(tmp_path / "inbox" / "waves" / "crashy.png")
    processing = tmp_path / "processing"
    first = wait_until(lambda: submitted(processing, "waves/crashy.png"), 20, "the first run")
    run = read_run(first.flow_run_id)
    assert run.parameters == {
        "content": str(processing / "waves" / "crashy.png"),
        "styles": ["waves"],
        "options": {"size": 48},
        "output": str(tmp_path / "outputs" / "waves" / "crashy.png"),
        "force": False,
        "content_name": str(tmp_path / "inbox" / "waves" / "crashy.png"),
    }
    assert run.labels[TAKE_LABEL] == first.take_id

    set_state(first.flow_run_id, Crashed(message="worker lost: out of memory"))
    second = wait_until(
        lambda: (
            (t := submitted(processing, "waves/crashy.png"))
            and t.flow_run_id != first.flow_run_id
            and t
        ),
        20,
        "the resubmitted run",
    )
    assert second.attempts == 1
    complete(second.flow_run_id)
    archived = tmp_path / "archive" / "waves"
    wait_until((archived / "crashy.png.run.json").exists, 20, "archived")
    assert take_in(archived, "crashy.png").outcome == "archived"
    assert (tmp_path / "outputs" / "waves" / "crashy.png").exists()


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
