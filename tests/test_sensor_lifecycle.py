"""The sensor's life cycle, one step at a time: take, prepare, submit, judge the run, finish,
recover; crashed runs resubmitted up to ``crash_retries``; back-off while Prefect is away.

Real: the inbox store (a local folder under tmp_path), the bookkeeping files, ``Lifecycle`` and
``InboxSensor``. Fake, because Prefect is not what these tests test: the gateway to Prefect
(``FakeGateway``, PrefectGateway's interface, in memory: one run per idempotency key, states
set by the test, "unreachable" on demand) and the sensor's clock (``FakeClock``, moved by the
test instead of waited for). The sensor's thread and the watchdog source are left out: each
test calls ``InboxSensor.step`` and offers files itself. So each test takes milliseconds.
PrefectGateway against a real Prefect server, and the running sensor with its thread and
watchdog, are in test_sensor_prefect.py.
"""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image

from flows.deployment import RunView
from flows.sensors.lifecycle import SensorConfig
from flows.sensors.sensor import InboxSensor
from flows.sensors.store import InboxStore
from flows.sensors.submit import TAKE_LABEL, PrefectGateway, SubmitError
from flows.sensors.take import Take
from flows.settings import Settings

PREFECT_WORDS = "Flow run encountered an exception: engine.images.ImageError: "


class FakeClock:
    """InboxSensor's clock: seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeGateway:
    """PrefectGateway's interface in memory (test_the_fake_gateway_has_the_real_interface
    keeps the two alike). Like Prefect: a key already used returns the run it created, with
    that submission's take label; a run that was deleted is missing from ``read_runs``.
    ``down``: every call fails as when the server is unreachable; ``refuse``: submissions are
    refused (not retryable)."""

    def __init__(self) -> None:
        self.runs: dict[str, RunView] = {}
        self.by_key: dict[str, str] = {}
        self.calls: list[dict[str, Any]] = []  # every submission asked for, in order
        self.events: list[tuple[str, str, dict[str, Any]]] = []  # (event, inbox_rel, payload)
        self.reads = 0
        self.down = False
        self.refuse = ""
        self.fail_for: set[str] = set()  # contents whose submission raises a plain bug

    def submit(
        self, parameters: dict[str, Any], *, key: str, tags: list[str], name: str, take: str
    ) -> RunView:
        self.calls.append(dict(parameters=parameters, key=key, tags=tags, name=name, take=take))
        if parameters["content"] in self.fail_for:
            raise RuntimeError("a bug in one file's submission")
        if self.down:
            raise SubmitError("Prefect unreachable: ConnectError('refused')", retryable=True)
        if self.refuse:
            raise SubmitError(f"Prefect refused the run (422): {self.refuse}", retryable=False)
        if key not in self.by_key:
            run = RunView(
                id=str(uuid.uuid4()),
                name=name,
                state_type="SCHEDULED",
                state_name="Scheduled",
                parameters=json.loads(json.dumps(parameters)),
                labels={TAKE_LABEL: take},
            )
            self.runs[run.id] = run
            self.by_key[key] = run.id
        return self.runs[self.by_key[key]]

    def run_url(self, run_id: str) -> str | None:
        return f"http://prefect.test/runs/flow-run/{run_id}"

    def read_runs(self, ids: list[str]) -> dict[str, RunView]:
        self.reads += 1
        if self.down:
            raise ConnectionError("Prefect unreachable")
        return {i: self.runs[i] for i in ids if i in self.runs}

    def emit(
        self,
        event: str,
        *,
        content_sha256: str,
        inbox_rel: str,
        root: str,
        run: RunView | None,
        payload: dict[str, Any],
    ) -> None:
        self.events.append((event, inbox_rel, payload))

    # --- what a worker, the flow or a person does to a run ---------------------------------
    def set(self, run_id: str, state_type: str, message: str = "") -> None:
        name = state_type.capitalize()
        self.runs[run_id] = replace(
            self.runs[run_id], state_type=state_type, state_name=name, message=message
        )

    def complete(self, run_id: str) -> None:
        """As the flow does: the result at ``output``, then Completed."""
        make_image(Path(self.runs[run_id].parameters["output"]))
        self.set(run_id, "COMPLETED")

    def delete(self, run_id: str) -> None:
        del self.runs[run_id]

    def submitted(self) -> int:
        """Submissions that created or found a run (not failed calls)."""
        return len(self.by_key)


@dataclass
class Inbox:
    """A sensor on a real folder store, stepped by hand."""

    root: Path
    gateway: FakeGateway
    clock: FakeClock
    sensor: InboxSensor
    config: SensorConfig

    def drop(self, rel: str, seed: int = 0, data: bytes | None = None) -> None:
        path = self.root / "inbox" / rel
        if data is None:
            make_image(path, seed=seed)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.sensor.offer(rel)

    def step(self, seconds: float = 0.0) -> None:
        """Let ``seconds`` pass, then one round of the sensor."""
        self.clock.advance(seconds)
        self.sensor.step()

    def judge(self) -> None:
        """One round after the poll interval: the runs' states are read and acted on."""
        self.step(self.config.poll_s)

    def take(self, area: str, rel: str) -> Take:
        return Take.from_json((self.root / area / f"{rel}.run.json").read_bytes())

    def run_of(self, rel: str) -> RunView:
        return self.gateway.runs[self.take("processing", rel).flow_run_id or ""]

    def files(self, area: str) -> list[str]:
        top = self.root / area
        return sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file())

    def restart(self) -> Inbox:
        """A new sensor on the same folders and Prefect, as after a stop: it recovers first."""
        again = inbox_at(self.root, self.gateway, self.config)
        again.sensor.files.recover()
        return again


def inbox_at(root: Path, gateway: FakeGateway | None = None, config: SensorConfig | None = None):
    config = config or SensorConfig(
        default_style="mosaic", options={"size": 48}, poll_s=2.0, crash_retries=2, retry_max_s=8
    )
    clock = FakeClock()
    gateway = gateway or FakeGateway()
    # A gallery of its own: the sensor checks a job's styles as the flow will.
    for style in ("mosaic", "ink", "wave"):
        if not (root / "styles" / f"{style}.png").exists():
            make_image(root / "styles" / f"{style}.png", seed=len(style))
    store = InboxStore(str(root), Settings(data_dir=root, styles_dir=root / "styles"))
    return Inbox(root, gateway, clock, InboxSensor(store, gateway, config, clock=clock), config)


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    return inbox_at(tmp_path)


@pytest.mark.parametrize("method", ["submit", "run_url", "read_runs", "emit"])
def test_the_fake_gateway_has_the_real_interface(method: str) -> None:
    def shape(f: Any) -> list[tuple[str, Any]]:
        return [(p.name, p.kind) for p in inspect.signature(f).parameters.values()]

    assert shape(getattr(FakeGateway, method)) == shape(getattr(PrefectGateway, method))
    public = {n for n in vars(PrefectGateway) if not n.startswith("_")}
    assert public <= set(vars(FakeGateway))


# --- take, prepare, submit, judge, finish -----------------------------------------------------


def test_a_drop_is_submitted_with_the_contract_parameters_then_archived(inbox: Inbox) -> None:
    inbox.drop("ink/good.png")
    inbox.step()
    assert inbox.files("inbox") == []
    assert inbox.files("processing") == ["ink/good.png", "ink/good.png.run.json"]
    take = inbox.take("processing", "ink/good.png")
    [call] = inbox.gateway.calls
    root = inbox.root
    assert call["parameters"] == {
        "content": str(root / "processing" / "ink" / "good.png"),
        "styles": ["ink"],
        "options": {"size": 48},
        "output": str(root / "outputs" / "ink" / "good.png"),
        "force": False,
        "content_name": str(root / "inbox" / "ink" / "good.png"),
    }
    # One tag for the source, the take as a label, a readable name, a key per attempt.
    assert call["tags"] == ["inbox"]
    assert call["take"] == take.take_id
    assert call["name"] == "good.png · ink"
    assert call["key"] == f"{take.key}:g0:a0" and take.key.startswith("styledrop-inbox:")
    assert take.flow_run_id == inbox.gateway.by_key[call["key"]]

    inbox.judge()  # still scheduled: nothing happens
    assert inbox.files("archive") == []
    inbox.gateway.complete(take.flow_run_id)
    inbox.judge()
    assert inbox.files("archive") == ["ink/good.png", "ink/good.png.run.json"]
    assert inbox.files("processing") == []
    done = inbox.take("archive", "ink/good.png")
    assert (done.outcome, done.destination) == ("archived", "ink/good.png")
    assert done.flow_run_id == take.flow_run_id
    assert [e[0] for e in inbox.gateway.events] == [
        "styledrop.inbox.received",
        "styledrop.inbox.archived",
    ]
    assert inbox.gateway.events[0][2]["content_sha256"] == take.content_sha256


def test_a_top_level_drop_gets_the_default_style(inbox: Inbox) -> None:
    inbox.drop("top.png")
    inbox.step()
    assert inbox.gateway.calls[0]["parameters"]["styles"] == ["mosaic"]


def test_a_failed_run_fails_the_file_with_its_reason_in_plain_words(inbox: Inbox) -> None:
    inbox.drop("bad.png")
    inbox.step()
    run = inbox.run_of("bad.png")
    where = str(inbox.root / "processing" / "bad.png")
    inbox.gateway.set(run.id, "FAILED", f"{PREFECT_WORDS}{where} is a truncated PNG")
    inbox.judge()
    assert inbox.files("failed") == ["bad.png", "bad.png.error.txt", "bad.png.run.json"]
    note = (inbox.root / "failed" / "bad.png.error.txt").read_text()
    reason = f"{inbox.root / 'inbox' / 'bad.png'} is a truncated PNG"  # where it was dropped
    assert f"Reason:   {reason}\n" in note
    assert run.id in note and f"http://prefect.test/runs/flow-run/{run.id}" in note
    assert "State:    Failed" in note
    assert inbox.take("failed", "bad.png").reason == reason
    assert inbox.gateway.events[-1][0] == "styledrop.inbox.failed"
    assert inbox.gateway.events[-1][2]["reason"] == reason


def test_a_completed_run_without_its_result_fails_the_file(inbox: Inbox) -> None:
    inbox.drop("lost.png")
    inbox.step()
    run = inbox.run_of("lost.png")
    inbox.gateway.set(run.id, "COMPLETED")  # but nothing written at its output
    inbox.judge()
    assert "wrote no result at" in inbox.take("failed", "lost.png").reason


def test_a_cancelled_run_fails_the_file(inbox: Inbox) -> None:
    inbox.drop("stop.png")
    inbox.step()
    inbox.gateway.set(inbox.run_of("stop.png").id, "CANCELLED", "cancelled by a person")
    inbox.judge()
    reason = inbox.take("failed", "stop.png").reason
    assert reason == "the run was cancelled. cancelled by a person"


def test_a_bad_sidecar_fails_the_file_at_once_without_a_run(inbox: Inbox) -> None:
    (inbox.root / "inbox").mkdir()
    (inbox.root / "inbox" / "photo.json").write_text('{"styles": ["ink"], "blend": [1]')  # no }
    inbox.drop("photo.png")
    inbox.step()
    assert inbox.gateway.calls == []
    assert inbox.files("failed") == [
        "photo.json",  # the sidecar goes with it
        "photo.png",
        "photo.png.error.txt",
        "photo.png.run.json",
    ]
    note = (inbox.root / "failed" / "photo.png.error.txt").read_text()
    assert "the sidecar photo.json cannot be used" in note and "not valid JSON" in note
    assert "Flow run: none" in note


@pytest.mark.parametrize(
    ("rel", "data", "sidecar", "words"),
    [
        ("notes.jpg", b"just some text, not a picture", None, "notes.jpg cannot be used"),
        ("empty.jpg", b"", None, "empty.jpg cannot be used"),
        ("tiny.png", "10x10", None, "is 10x10 pixels: too small to stylise"),
        ("nope/photo.png", None, None, "unknown style 'nope'"),
        ("photo.png", None, '{"size": 4}', "size must be between 16 and 8192"),
        ("photo.png", None, '{"colour": "red"}', "unknown option(s): colour"),
        ("photo.png", None, '{"styles": ["ink", "wave"], "blend": [1]}', "1 blend weights for 2"),
    ],
)
def test_a_file_the_flow_would_refuse_fails_at_once_without_a_run(
    inbox: Inbox, rel: str, data: bytes | str | None, sidecar: str | None, words: str
) -> None:
    """The sensor runs the flow's own checks (flows/checks.py) before it submits, so a bad
    file is in failed/ with the flow's words at once, whatever the queue holds."""
    if sidecar is not None:
        (inbox.root / "inbox").mkdir(parents=True, exist_ok=True)
        (inbox.root / "inbox" / Path(rel).with_suffix(".json")).write_text(sidecar)
    if data == "10x10":
        make_image(inbox.root / "inbox" / rel, size=(10, 10))
        inbox.sensor.offer(rel)
    else:
        inbox.drop(rel, data=data)
    inbox.step()
    assert inbox.gateway.calls == []
    assert rel in inbox.files("failed")
    reason = inbox.take("failed", rel).reason or ""
    assert words in reason, reason
    note = (inbox.root / "failed" / f"{rel}.error.txt").read_text()
    assert words in note and "Flow run: none" in note


def test_a_refused_submission_fails_the_file_with_prefects_words(inbox: Inbox) -> None:
    inbox.gateway.refuse = "parameters do not match the deployment's schema"
    inbox.drop("odd.png")
    inbox.step()
    reason = inbox.take("failed", "odd.png").reason
    assert reason.startswith("the flow run could not be created: Prefect refused the run (422)")
    assert "schema" in reason


def test_one_files_trouble_does_not_stop_the_others(inbox: Inbox) -> None:
    """A bug while submitting one file leaves it in processing/ to be tried again; the file
    beside it is submitted all the same."""
    inbox.gateway.fail_for = {str(inbox.root / "processing" / "a.png")}
    inbox.drop("a.png")
    inbox.drop("b.png", seed=1)
    inbox.step()
    assert inbox.take("processing", "b.png").flow_run_id
    assert inbox.take("processing", "a.png").flow_run_id is None
    inbox.gateway.fail_for = set()
    inbox.step()
    assert inbox.take("processing", "a.png").flow_run_id


def test_a_storage_hiccup_while_preparing_is_retried_at_the_next_poll(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's hashing fails (a stand-in for an S3 timeout, which a local folder cannot
    produce) when the file is taken and again at the round's poll: the file stays in
    processing/, and the next poll prepares it again; then it is submitted."""
    store = inbox.sensor.files.store
    real, failures = store.sha256, [OSError("S3 read timed out")] * 2

    def flaky(area: str, rel: str) -> str:
        if failures:
            raise failures.pop()
        return real(area, rel)

    monkeypatch.setattr(store, "sha256", flaky)
    inbox.drop("flaky.png")
    inbox.step()
    assert inbox.gateway.calls == []
    assert inbox.take("processing", "flaky.png").parameters is None
    inbox.judge()  # prepared again with the poll...
    inbox.step()  # ...and submitted in the next round
    assert inbox.take("processing", "flaky.png").flow_run_id


def test_run_states_are_read_once_per_poll_interval_for_all_files(inbox: Inbox) -> None:
    for i in range(3):
        inbox.drop(f"f{i}.png", seed=i)
    inbox.step()  # taken and submitted; the first poll is due at once
    assert inbox.gateway.reads == 1
    for _ in range(5):
        inbox.step(inbox.config.poll_s / 4)
    assert inbox.gateway.reads == 2  # one read for the three files each poll_s, no more


# --- crashes ----------------------------------------------------------------------------------


def test_a_crashed_run_is_resubmitted_up_to_crash_retries_then_the_file_fails(
    inbox: Inbox,
) -> None:
    inbox.drop("crashy.png")
    inbox.step()
    keys = []
    for attempt in range(3):  # the first run, then crash_retries (2) resubmissions
        take = inbox.take("processing", "crashy.png")
        assert take.attempts == attempt
        keys.append(inbox.gateway.calls[-1]["key"])
        inbox.gateway.set(take.flow_run_id, "CRASHED", "worker lost: out of memory")
        inbox.judge()  # judged crashed...
        inbox.step()  # ...and resubmitted in the next round, with a new key
    assert keys == [f"{take.key}:g0:a{n}" for n in range(3)]
    assert len(set(inbox.gateway.runs)) == 3
    note = (inbox.root / "failed" / "crashy.png.error.txt").read_text()
    assert "the run crashed: worker lost: out of memory" in note
    assert "gave up after 2 resubmission(s)" in note
    assert "Resubmitted 2 time(s) after crashes." in note
    assert inbox.take("failed", "crashy.png").attempts == 2
    events = [e[0] for e in inbox.gateway.events]
    assert events == ["styledrop.inbox.received"] + ["styledrop.inbox.resubmitted"] * 2 + [
        "styledrop.inbox.failed"
    ]


def test_a_run_that_vanished_is_resubmitted_like_a_crashed_one(inbox: Inbox) -> None:
    inbox.drop("gone.png")
    inbox.step()
    first = inbox.run_of("gone.png")
    inbox.gateway.delete(first.id)
    inbox.judge()
    inbox.step()
    take = inbox.take("processing", "gone.png")
    assert take.attempts == 1 and take.flow_run_id not in (None, first.id)
    inbox.gateway.complete(take.flow_run_id)
    inbox.judge()
    assert inbox.take("archive", "gone.png").attempts == 1


# --- Prefect unreachable ----------------------------------------------------------------------


def test_while_prefect_is_unreachable_submissions_back_off_together(inbox: Inbox, caplog) -> None:
    """One probe per round for all waiting files, 1, 2, 4... s apart up to retry_max_s (8);
    once Prefect answers, every waiting file is submitted and the back-off starts over."""
    caplog.set_level(logging.WARNING, logger="styledrop.sensor")
    inbox.gateway.down = True
    inbox.drop("a.png")
    inbox.drop("b.png", seed=1)
    start = inbox.clock.now
    inbox.step()
    attempts = [0.0]
    for _ in range(4 * 30):  # 30 s in quarter seconds
        before = len(inbox.gateway.calls)
        inbox.step(0.25)
        attempts += [inbox.clock.now - start] * (len(inbox.gateway.calls) - before)
    assert attempts == [0, 1, 3, 7, 15, 23]  # waits 1, 2, 4, 8, 8
    assert inbox.files("processing") == ["a.png", "a.png.run.json", "b.png", "b.png.run.json"]
    assert inbox.take("processing", "a.png").flow_run_id is None
    assert sum("retry in" in m for m in caplog.messages) == len(attempts)

    inbox.gateway.down = False
    inbox.step(8)
    assert inbox.gateway.submitted() == 2  # both at once, each with its own run
    inbox.gateway.down = True
    inbox.drop("c.png", seed=2)
    inbox.step()
    inbox.gateway.down = False
    inbox.step(0.5)
    assert inbox.gateway.submitted() == 2  # the back-off starts over at 1 s...
    inbox.step(0.5)
    assert inbox.gateway.submitted() == 3  # ...not at 8


def test_reading_states_while_prefect_is_unreachable_changes_nothing(inbox: Inbox) -> None:
    inbox.drop("wait.png")
    inbox.step()
    run = inbox.run_of("wait.png")
    inbox.gateway.complete(run.id)
    inbox.gateway.down = True
    for _ in range(3):
        inbox.judge()
    assert inbox.files("processing") == ["wait.png", "wait.png.run.json"]
    inbox.gateway.down = False
    inbox.judge()
    assert inbox.files("archive") == ["wait.png", "wait.png.run.json"]


# --- the same file again; names ---------------------------------------------------------------


def test_a_file_dropped_again_after_failing_gets_a_new_run(inbox: Inbox) -> None:
    data = make_image(inbox.root / "src.png", seed=3).read_bytes()
    inbox.drop("again.png", data=data)
    inbox.step()
    first = inbox.take("processing", "again.png")
    inbox.gateway.set(first.flow_run_id, "FAILED", "style 'mosaic' not in the gallery")
    inbox.judge()
    # Same bytes, same place: the key finds the failed run. A person dropping the file again
    # wants it tried again, not the old failure back.
    inbox.drop("again.png", data=data)
    inbox.step()
    second = inbox.take("processing", "again.png")
    assert second.key == first.key and second.generation == 1
    assert second.flow_run_id != first.flow_run_id
    assert inbox.files("failed")[0] == "again.png"  # the first attempt stays on record


def test_a_file_dropped_again_while_its_first_run_runs_shares_that_run(inbox: Inbox) -> None:
    data = make_image(inbox.root / "src.png", seed=3).read_bytes()
    inbox.drop("twice.png", data=data)
    inbox.step()
    inbox.drop("twice.png", data=data)
    inbox.step()
    first, second = inbox.take("processing", "twice.png"), inbox.take("processing", "twice-1.png")
    assert second.flow_run_id == first.flow_run_id  # no second run for the same job
    assert second.parameters["output"] == first.parameters["output"]
    inbox.gateway.complete(first.flow_run_id)
    inbox.judge()
    assert inbox.files("archive") == sorted(
        ["twice.png", "twice.png.run.json", "twice-1.png", "twice-1.png.run.json"]
    )


def test_an_earlier_drops_completed_run_with_its_result_is_reused(inbox: Inbox) -> None:
    data = make_image(inbox.root / "src.png", seed=3).read_bytes()
    inbox.drop("done.png", data=data)
    inbox.step()
    first = inbox.take("processing", "done.png")
    inbox.gateway.complete(first.flow_run_id)
    inbox.judge()
    inbox.drop("done.png", data=data)
    inbox.step()
    assert inbox.take("processing", "done.png").flow_run_id == first.flow_run_id
    inbox.judge()
    assert inbox.gateway.submitted() == 1
    assert inbox.files("archive") == sorted(
        ["done.png", "done.png.run.json", "done-1.png", "done-1.png.run.json"]
    )


def test_the_same_photo_in_two_style_folders_is_two_runs(inbox: Inbox) -> None:
    data = make_image(inbox.root / "src.png", seed=4).read_bytes()
    inbox.drop("ink/same.png", data=data)
    inbox.drop("wave/same.png", data=data)
    inbox.step()
    ink, wave = inbox.take("processing", "ink/same.png"), inbox.take("processing", "wave/same.png")
    assert ink.content_sha256 == wave.content_sha256
    assert ink.flow_run_id != wave.flow_run_id


def test_names_are_never_overwritten(inbox: Inbox) -> None:
    """Two photos with one stem share a sidecar and an output name; a name already in
    archive/ gets a suffix. Nothing is overwritten, nothing is lost."""
    (inbox.root / "inbox" / "ink").mkdir(parents=True)
    (inbox.root / "inbox" / "ink" / "photo.json").write_text('{"size": 40}')
    inbox.drop("ink/photo.png", seed=1)
    inbox.drop("ink/photo.jpg", seed=2)
    inbox.step()
    # In processing/ the jpg is photo-1.jpg: photo.json there is photo.png's sidecar.
    png = inbox.take("processing", "ink/photo.png")
    jpg = inbox.take("processing", "ink/photo-1.jpg")
    assert jpg.inbox_rel == "ink/photo.jpg"
    outputs = {inbox.gateway.runs[t.flow_run_id].parameters["output"] for t in (png, jpg)}
    assert outputs == {
        str(inbox.root / "outputs/ink/photo.png"),
        str(inbox.root / "outputs/ink/photo-1.png"),
    }
    for take in (png, jpg):  # each job kept the shared sidecar's settings
        assert inbox.gateway.runs[take.flow_run_id].parameters["options"] == {"size": 40}
    assert not (inbox.root / "inbox" / "ink" / "photo.json").exists()
    for take in (png, jpg):
        inbox.gateway.complete(take.flow_run_id)
    inbox.judge()
    assert inbox.files("archive") == [
        "ink/photo-1.jpg",
        "ink/photo-1.jpg.run.json",
        "ink/photo-1.json",
        "ink/photo.json",
        "ink/photo.png",
        "ink/photo.png.run.json",
    ]
    inbox.drop("ink/photo.png", seed=3)  # the same name again, new content
    inbox.step()
    again = inbox.take("processing", "ink/photo.png")
    output = inbox.gateway.runs[again.flow_run_id].parameters["output"]
    assert output == str(inbox.root / "outputs/ink/photo-2.png")
    inbox.gateway.complete(again.flow_run_id)
    inbox.judge()
    assert (inbox.root / "archive" / "ink" / "photo-1.png").exists()  # beside, not over
    assert len(list((inbox.root / "outputs" / "ink").glob("photo*.png"))) == 3


# --- recovery after a stop ------------------------------------------------------------------


def test_a_restarted_sensor_tracks_running_runs_and_resubmits_vanished_ones(
    inbox: Inbox,
) -> None:
    inbox.drop("alive.png")
    inbox.drop("gone.png", seed=1)
    inbox.step()
    alive, gone = inbox.take("processing", "alive.png"), inbox.take("processing", "gone.png")
    inbox.gateway.set(alive.flow_run_id, "RUNNING")
    inbox.gateway.delete(gone.flow_run_id)

    again = inbox.restart()
    again.step()  # the first poll at once: alive is running, gone is gone...
    again.step()  # ...and resubmitted
    resubmitted = again.take("processing", "gone.png")
    assert resubmitted.attempts == 1 and resubmitted.flow_run_id != gone.flow_run_id
    assert again.take("processing", "alive.png").flow_run_id == alive.flow_run_id
    assert inbox.gateway.submitted() == 3  # alive's run is tracked again, not duplicated
    again.gateway.complete(alive.flow_run_id)
    again.judge()
    assert again.files("archive") == ["alive.png", "alive.png.run.json"]


def test_recovery_submits_what_was_taken_but_not_submitted(inbox: Inbox) -> None:
    """Stopped after the move (and the sidecar's) but before the bookkeeping was written,
    and after the bookkeeping but before the submission."""
    processing = inbox.root / "processing"
    make_image(processing / "ink" / "moved.png")
    (processing / "ink" / "moved.json").write_text('{"size": 40}')
    inbox.gateway.down = True
    inbox.drop("prepared.png", seed=1)
    inbox.step()
    assert inbox.take("processing", "prepared.png").flow_run_id is None
    inbox.gateway.down = False

    again = inbox.restart()
    again.step()
    moved = again.take("processing", "ink/moved.png")
    assert moved.sidecar == "ink/moved.json"
    assert again.gateway.runs[moved.flow_run_id].parameters["options"] == {"size": 40}
    assert moved.history[0]["what"] == "found in processing/ without bookkeeping"
    assert again.take("processing", "prepared.png").flow_run_id
    assert again.gateway.submitted() == 2


def test_recovery_finishes_a_finish_that_was_cut_short(inbox: Inbox) -> None:
    """The decision (failed, where to) is saved before the files move: a sensor stopped
    between the two moves them on its next start."""
    inbox.drop("half.png")
    inbox.step()
    take = inbox.take("processing", "half.png")
    take.outcome, take.reason, take.destination = "failed", "the run failed", "half.png"
    (inbox.root / "processing" / "half.png.run.json").write_bytes(take.to_json())

    inbox.restart()
    assert inbox.files("processing") == []
    assert inbox.files("failed") == ["half.png", "half.png.error.txt", "half.png.run.json"]
    assert "Reason:   the run failed" in (inbox.root / "failed" / "half.png.error.txt").read_text()


def test_recovery_fails_a_file_gone_from_processing(inbox: Inbox) -> None:
    inbox.drop("vanish.png")
    inbox.step()
    (inbox.root / "processing" / "vanish.png").unlink()  # someone removed it
    inbox.restart()
    assert inbox.files("failed") == ["vanish.png.error.txt", "vanish.png.run.json"]
    reason = inbox.take("failed", "vanish.png").reason
    assert reason == "the file disappeared from processing/ before it finished"


def test_recovery_leaves_a_file_with_unreadable_bookkeeping_alone(inbox: Inbox, caplog) -> None:
    """Its bookkeeping is kept for a person to read, not overwritten by a fresh take; the
    other files are recovered."""
    processing = inbox.root / "processing"
    make_image(processing / "odd.png")
    (processing / "odd.png.run.json").write_text("{not json")
    make_image(processing / "fine.png", seed=1)
    again = inbox.restart()
    again.step()
    assert (processing / "odd.png.run.json").read_text() == "{not json"
    assert [c["parameters"]["content"] for c in again.gateway.calls] == [
        str(processing / "fine.png")
    ]
    assert any("unreadable bookkeeping processing/odd.png.run.json" in m for m in caplog.messages)
