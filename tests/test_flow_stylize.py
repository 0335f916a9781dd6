"""The stylize flow run in this process against conftest's real Prefect server: a job
completes with result, record and artifacts; the same job again is reused; bad input fails at
once with its reason and no retry; a cancel request stops a running job.

Tiny images, the random backbone (conftest) and a few steps keep each run to seconds.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from conftest import artifacts_of, configure, make_image, task_runs_of, wait_until
from PIL import Image
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
)
from prefect.states import Cancelling

from flows import storage
from flows.jobs import JobRecord
from flows.layout import JobLayout, run_link_path
from flows.settings import Settings, get_settings
from flows.storage import Storage
from flows.stylize import stylize

FAST = {"size": 48, "iterations": 8, "min_size": 48}  # one scale, 8 steps
# Previews are served by the dashboard: http://<host>:<dashboard_port>/files/<path>.
FILES_URL = "http://files.test:8599/files"


def signed_link(url: str, settings: Settings) -> str:
    """The storage path a /files/ link of FILES_URL opens, checked to be validly signed."""
    from urllib.parse import parse_qs, unquote, urlsplit

    from flows.links import link_key, valid

    assert url.startswith(f"{FILES_URL}/"), url
    parts = urlsplit(url)
    rel = unquote(parts.path.removeprefix("/files/"))
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert valid(link_key(settings), rel, query.get("exp"), query.get("sig")), url
    return rel


def events_of(api_url: str, flow_run_id: UUID, names: list[str]) -> list[dict]:
    resource = {"id": [f"prefect.flow-run.{flow_run_id}"]}
    body = {"filter": {"event": {"name": names}, "resource": resource}, "limit": 50}
    response = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()["events"]


# --- a completed job, reused, forced ---------------------------------------------------------


@pytest.fixture(scope="module")
def done(prefect_api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One completed job, shared by the tests below (each run costs seconds)."""
    root = tmp_path_factory.mktemp("flow-done")
    with pytest.MonkeyPatch.context() as mp:
        settings = configure(mp, root)
        content = make_image(root / "in" / "photo.png", (48, 40), seed=1)
        style = make_image(root / "in" / "style.png", (48, 48), seed=2)
        started = time.monotonic()
        state = stylize(str(content), [str(style)], FAST, output="exports/photo.jpg",
                        return_state=True)
        yield {
            "state": state,
            "settings": settings,
            "store": Storage(settings.storage_root, settings),
            "content": content,
            "style": style,
            "seconds": time.monotonic() - started,
            "mp": mp,
        }
    get_settings.cache_clear()


def test_a_run_completes_with_result_and_record(done) -> None:
    state, store = done["state"], done["store"]
    assert state.is_completed(), state.message
    record = state.result()
    job_id = record["job_id"]
    assert record["status"] == "completed" and not record.get("reused")
    assert record["steps"] == record["total_steps"] == 8
    assert record["backbone"].startswith("random") and record["device"] == "cpu"
    # Run in this process, not by a worker: no worker name.
    assert record["worker"] == {"host": socket.gethostname(), "name": ""}
    assert record["flow_run_id"] == str(state.state_details.flow_run_id)
    assert record["steps_per_second"] > 0 and record["timings"]["finished_at"]

    result = Image.open(io.BytesIO(store.read_bytes(JobLayout(job_id).result)))
    assert result.format == "PNG" and result.size == (48, 40)
    assert store.read_json(JobLayout(job_id).record) == record
    assert store.exists(JobLayout(job_id).preview)
    link = store.read_json(run_link_path(record["flow_run_id"]))
    assert link["job_id"] == job_id and link["record"] == JobLayout(job_id).record

    # output=: a JPEG where the caller asked (relative: inside the storage root) + its record
    exported = Image.open(io.BytesIO(store.read_bytes("exports/photo.jpg")))
    assert exported.format == "JPEG" and exported.size == (48, 40)
    assert json.loads(store.read_bytes("exports/photo.jpg.json"))["job_id"] == job_id
    assert not list(Path(store.root).rglob("*.tmp")), "temporary files left behind"


def test_the_persisted_result_lives_under_the_storage_root(done, client) -> None:
    """Not in the worker's ~/.prefect/storage: any machine sharing the storage reads it."""
    run = client.read_flow_run(done["state"].state_details.flow_run_id)
    key = Path(run.state.data.storage_key)  # the result record's metadata, from the server
    assert key.parent == Path(done["store"].root) / "_prefect_results", key
    assert key.is_file()
    # Read back through Prefect from the server's copy of the state alone.
    assert run.state.result() == done["state"].result()




def test_a_completed_run_cannot_be_put_back_in_the_queue(done, client) -> None:
    """What the lost-run automation proposes for a silent run; for a finished one the server
    must refuse it (the flow persists its result), or the job would run again."""
    from prefect.states import AwaitingRetry

    run_id = done["state"].state_details.flow_run_id
    answer = client.set_flow_run_state(run_id, AwaitingRetry(message="test"), force=False)
    # Refused for being Completed (not aborted for lacking a deployment, as this in-process
    # run would be otherwise).
    assert answer.status.value == "REJECT" and "COMPLETED" in str(answer.details), answer
    assert client.read_flow_run(run_id).state.is_completed()

def test_the_run_says_it_is_alive_and_falls_silent_before_its_final_state(
    done, prefect_api
) -> None:
    """The lost-run automation's signal (flows/alive.py): alive events about this run, tied to
    the `stylize` flow, none after the run completed, and the run's end following the last
    one (an alive event evaluated late would start a silence that reschedules a finished run;
    the end event, ordered after it, closes it)."""
    run_id = done["state"].state_details.flow_run_id
    names = ["styledrop.run.alive", "styledrop.run.ended", "prefect.flow-run.Completed"]

    def both() -> list[dict] | None:
        found = events_of(prefect_api.api_url, run_id, names)
        return found if {e["event"] for e in found} == set(names) else None

    found = wait_until(both, 30, "the run's alive, ended and Completed events")
    (completed,) = [e for e in found if e["event"] == "prefect.flow-run.Completed"]
    (ended,) = [e for e in found if e["event"] == "styledrop.run.ended"]
    # Received (what the automation goes by), not only sent, before the final state; and
    # three beats (STYLEDROP_HEARTBEAT_S=1) later still nothing after it.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        alive = [e for e in found if e["event"] == "styledrop.run.alive"]
        assert max(e["received"] for e in alive) < completed["received"], "alive after Completed"
        time.sleep(0.5)
        found = events_of(prefect_api.api_url, run_id, names)
    assert ended["follows"] == max(alive, key=lambda e: e["occurred"])["id"], (ended, alive)
    assert ended["received"] < completed["received"]
    assert any(
        r["prefect.resource.role"] == "flow" and r["prefect.resource.name"] == "stylize"
        for r in alive[0]["related"]
    ), alive[0]

def test_a_run_publishes_progress_preview_and_summary(done, client) -> None:
    state = done["state"]
    record = state.result()
    arts = artifacts_of(client, state.state_details.flow_run_id)
    (progress,) = arts["progress"]
    assert progress.data == 100 and progress.key == f"job-{record['job_id']}-progress"
    images = {a.key: a for a in arts["image"]}
    preview = images[f"job-{record['job_id']}-preview"]
    assert signed_link(preview.data, done["settings"]) == f"_jobs/{record['job_id']}/preview.jpg"
    # The input photo beside it, as a browser-sized copy that outlives the original's move.
    photo = images[f"job-{record['job_id']}-input"]
    assert signed_link(photo.data, done["settings"]) == f"_jobs/{record['job_id']}/input.jpg"
    assert photo.description == Path(done["content"]).name
    assert len(images) == 2
    (summary,) = arts["markdown"]
    assert summary.key == f"job-{record['job_id']}-summary"
    assert record["job_id"] in summary.data
    assert "Warning: random backbone" in summary.data
    result_link = summary.data.split("![result](", 1)[1].split(")", 1)[0]
    assert signed_link(result_link, done["settings"]) == f"_jobs/{record['job_id']}/result.png"
    assert str(done["content"]) in summary.data


def test_a_run_is_named_after_its_photo_and_logs_its_progress(done, client) -> None:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    run_id = done["state"].state_details.flow_run_id
    assert client.read_flow_run(run_id).name == "photo.png · style"

    def progress_lines() -> list[str]:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        return [log.message for log in logs if "% done: step" in log.message]

    # 8 steps: a line at each tenth passed (12.5% -> "10%", ..., 100%), not one per step.
    lines = wait_until(lambda: len(progress_lines()) >= 8 and progress_lines(), 30, "logs")
    assert lines[0].startswith("10% done: step 1/8") and lines[-1].startswith("100% done")
    assert len(lines) == 8


def test_the_same_job_again_is_reused_not_computed(done, client) -> None:
    first = done["state"].result()
    store = done["store"]
    result_file = Path(store.url(JobLayout(first["job_id"]).result))
    mtime = result_file.stat().st_mtime_ns
    # Same bytes under another name, same parameters written differently: same job.
    copy = done["content"].with_name("copy.png")
    copy.write_bytes(done["content"].read_bytes())
    state = stylize(str(copy), [str(done["style"])], {**FAST, "style_blend": [3.0]},
                    return_state=True)
    assert state.is_completed(), state.message
    again = state.result()
    assert again["reused"] is True and again["job_id"] == first["job_id"]
    assert again["flow_run_id"] == first["flow_run_id"]  # who computed it
    assert "stylize image" not in task_runs_of(client, state.state_details.flow_run_id)
    assert result_file.stat().st_mtime_ns == mtime
    assert store.read_json(run_link_path(str(state.state_details.flow_run_id)))["job_id"] \
        == first["job_id"]


def test_force_computes_again(done, client) -> None:
    first = done["state"].result()
    state = stylize(str(done["content"]), [str(done["style"])], FAST, force=True,
                    return_state=True)
    assert state.is_completed(), state.message
    forced = state.result()
    assert not forced.get("reused") and forced["job_id"] == first["job_id"]
    assert forced["flow_run_id"] == str(state.state_details.flow_run_id) != first["flow_run_id"]
    assert forced["resumed_from_step"] == 0
    assert "stylize image" in task_runs_of(client, state.state_details.flow_run_id)


def test_the_same_job_twice_at_the_same_moment_is_computed_once(
    prefect_api, client, tmp_path, monkeypatch
) -> None:
    """Two runs of one job at once, with GPU room for both: one computes, the other waits for
    it and returns its record. (Across workers: tests/test_duplicates.py.)"""
    settings = configure(
        monkeypatch, tmp_path, STYLEDROP_GPU_SLOTS="2", STYLEDROP_DUPLICATE_POLL_S="0.3"
    )
    content = make_image(tmp_path / "photo.png", (48, 40), seed=21)
    style = make_image(tmp_path / "style.png", (48, 48), seed=22)
    options = {**FAST, "iterations": 40}
    start = threading.Barrier(2)
    states: list = [None, None]

    def submit(i: int) -> None:
        start.wait()
        states[i] = stylize(str(content), [str(style)], options, return_state=True)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)

    assert all(s is not None and s.is_completed() for s in states), states
    records = [s.result() for s in states]
    assert records[0]["job_id"] == records[1]["job_id"]
    (computed,) = [r for r in records if not r.get("reused")]
    (reused,) = [r for r in records if r.get("reused")]
    def who(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("reused", "reused_by")}

    assert who(reused) == who(computed)
    assert reused["reused_by"] != computed["flow_run_id"]
    assert computed["steps"] == 40 and computed["resumed_from_step"] == 0
    # The engine ran once: one "stylize image" task over both runs.
    engine_runs = [
        tr
        for s in states
        for tr in task_runs_of(client, s.state_details.flow_run_id).get("stylize image", [])
    ]
    assert len(engine_runs) == 1, engine_runs
    assert Storage(settings.storage_root, settings).exists(JobLayout(computed["job_id"]).result)


def test_a_claim_after_the_owner_finished_waits_for_its_result_instead_of_computing(
    prefect_api, client, tmp_path, monkeypatch
) -> None:
    """The race of two runs at once that CI met: the second looked for a finished job just
    before the first wrote its result, then asked for the claim after it. The claim must see
    the finished job, not write a new "running" record over it and compute it again."""
    from uuid import uuid4

    from flows.checks import check_job
    from flows.tasks.records import try_claim

    settings = configure(monkeypatch, tmp_path)
    store = Storage(settings.storage_root, settings)
    content = make_image(tmp_path / "photo.png", (48, 40), seed=31)
    style = make_image(tmp_path / "style.png", (48, 48), seed=32)
    state = stylize(str(content), [str(style)], FAST, return_state=True)
    finished = state.result()
    job = check_job(str(content), [str(style)], FAST, None, None, settings)

    claim = try_claim(store, job, str(uuid4()), False)

    assert claim.record is None and claim.owner == finished["flow_run_id"]  # take its result
    assert store.read_json(JobLayout(job.job_id).record) == finished  # as the owner wrote it


def one_holder_at_a_time(lock, held_check=lambda: None) -> None:
    """Two threads ask for ``lock()``: the second gets in only once the first let go."""
    entered = threading.Event()

    def second() -> None:
        with lock():
            entered.set()

    with lock():
        held_check()
        other = threading.Thread(target=second)
        other.start()
        assert not entered.wait(1.5), "a second holder got in while the first held the lock"
    assert entered.wait(15), "the second holder never got in after the first let go"
    other.join(15)


def test_the_claim_lock_of_local_storage_lets_one_holder_in_at_a_time(tmp_path) -> None:
    from flows.tasks.records import claim_lock

    store = Storage(str(tmp_path / "out"), Settings())
    one_holder_at_a_time(lambda: claim_lock(store, "0123456789abcdef", None))
    assert (tmp_path / "out" / JobLayout("0123456789abcdef").claim_lock).exists()


def test_the_global_claim_lock_lets_one_holder_in_at_a_time(prefect_api, client) -> None:
    """The lock of S3 storage, shared by machines through the Prefect server."""
    from flows.tasks.records import CLAIM_LIMIT, global_claim_lock

    def held() -> None:
        assert client.read_global_concurrency_limit_by_name(CLAIM_LIMIT).active_slots == 1

    one_holder_at_a_time(lambda: global_claim_lock(None), held)
    assert client.read_global_concurrency_limit_by_name(CLAIM_LIMIT).active_slots == 0


def test_a_run_waiting_for_a_lost_duplicate_takes_over(
    prefect_api, client, tmp_path, monkeypatch
) -> None:
    """The job's record says another run computes it: this run waits while that run is
    alive, and computes the job itself once that run has crashed."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.states import Crashed, Running

    from flows.checks import check_job

    settings = configure(monkeypatch, tmp_path, STYLEDROP_DUPLICATE_POLL_S="0.3")
    store = Storage(settings.storage_root, settings)
    content = make_image(tmp_path / "photo.png", (48, 40), seed=31)
    style = make_image(tmp_path / "style.png", (48, 48), seed=32)
    job = check_job(str(content), [str(style)], FAST, None, None, settings)
    owner = client.create_flow_run(stylize, parameters={"content": str(content)}, state=Running())
    store.write_bytes(
        JobLayout(job.job_id).record, JobRecord.start(job, str(owner.id), False).to_json()
    )

    done: dict = {}
    waiter = threading.Thread(
        target=lambda: done.update(state=stylize(str(content), [str(style)], FAST,
                                                 return_state=True))
    )
    waiter.start()

    def waiting() -> bool:
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="claim job")
            )
        )
        return any(tr.state and tr.state.is_running() for tr in task_runs)

    wait_until(waiting, 60, "the second run to wait for the first")
    assert store.read_json(JobLayout(job.job_id).record)["flow_run_id"] == str(owner.id)
    client.set_flow_run_state(owner.id, Crashed(message="worker lost"), force=True)
    waiter.join(120)

    state = done["state"]
    assert state.is_completed(), state.message
    record = state.result()
    assert record["flow_run_id"] == str(state.state_details.flow_run_id) != str(owner.id)
    assert not record.get("reused") and record["steps"] == record["total_steps"]
    assert "stylize image" in task_runs_of(client, state.state_details.flow_run_id)


# --- refused jobs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "reason", "advice"),
    [
        ("not_an_image", "not-an-image.png", "Use a complete PNG, JPEG or WebP image"),
        ("too_small", "too small to stylise", "Use a larger image."),
        ("missing", "content image not found", "Check the path and submit again."),
        ("unknown_style", "unknown style 'no-such-style'", "Name one of these"),
        ("bad_option", "size must be between 16 and 8192", "Fix the options"),
    ],
)
def test_bad_input_fails_at_once_with_its_reason(
    case, reason, advice, prefect_api, client, tmp_path, monkeypatch
) -> None:
    settings = configure(monkeypatch, tmp_path)
    content = make_image(tmp_path / "photo.png", (48, 40))
    style, options = str(make_image(tmp_path / "style.png", (48, 48), seed=3)), dict(FAST)
    if case == "not_an_image":
        content = tmp_path / "not-an-image.png"
        content.write_text("this is text")
    elif case == "too_small":
        content = make_image(tmp_path / "tiny.png", (20, 20))
    elif case == "missing":
        content = tmp_path / "missing.png"
    elif case == "unknown_style":
        style = "no-such-style"
    elif case == "bad_option":
        options["size"] = 4

    started = time.monotonic()
    state = stylize(str(content), [style], options, return_state=True)
    elapsed = time.monotonic() - started

    assert state.is_failed()
    assert reason in state.message, state.message
    # In plain words: no Prefect wrapper, and what to do about it.
    assert not state.message.startswith("Flow run encountered"), state.message
    assert "JobRejected" not in state.message
    assert advice in state.message, state.message
    run_id = state.state_details.flow_run_id
    flow_run = client.read_flow_run(run_id)
    assert flow_run.run_count == 1
    (validate,) = task_runs_of(client, run_id)["check inputs"]
    assert validate.run_count == 1, "a refused job must not be retried"
    assert "stylize image" not in task_runs_of(client, run_id)
    assert elapsed < 20  # no retry delays
    link = Storage(settings.storage_root, settings).read_json(run_link_path(str(run_id)))
    assert link["status"] == "rejected" and reason in link["error"]


def test_an_engine_failure_fails_the_run_and_marks_its_record(
    prefect_api, client, tmp_path, monkeypatch
) -> None:
    """Pretrained weights asked for but not there: a configuration error, not retried."""
    settings = configure(
        monkeypatch, tmp_path,
        STYLEDROP_BACKBONE="vgg19", STYLEDROP_WEIGHTS=str(tmp_path / "missing-vgg19.pth"),
    )
    content = make_image(tmp_path / "photo.png", (48, 40), seed=13)
    style = make_image(tmp_path / "style.png", (48, 48), seed=14)

    state = stylize(str(content), [str(style)], FAST, return_state=True)

    assert state.is_failed()
    assert "BackboneError" in state.message and "missing-vgg19.pth" in state.message
    run_id = state.state_details.flow_run_id
    (engine_run,) = task_runs_of(client, run_id)["stylize image"]
    assert engine_run.run_count == 1
    store = Storage(settings.storage_root, settings)
    job_id = store.read_json(run_link_path(str(run_id)))["job_id"]
    record = store.read_json(JobLayout(job_id).record)
    assert record["status"] == "failed" and "missing-vgg19.pth" in record["error"]


# --- cancel ----------------------------------------------------------------------------------


def test_cancel_request_stops_a_running_job(
    prefect_api, client, tmp_path, monkeypatch
) -> None:
    """Run in this process (no runner to kill it): the engine callback sees CANCELLING."""
    settings = configure(monkeypatch, tmp_path)
    store = Storage(settings.storage_root, settings)
    content = make_image(tmp_path / "photo.png", (48, 40))
    style = make_image(tmp_path / "style.png", (48, 48), seed=4)
    endless = {"size": 48, "iterations": 100_000, "min_size": 48}
    states: list = []
    worker = threading.Thread(
        target=lambda: states.append(
            stylize(str(content), [str(style)], endless, return_state=True)
        )
    )
    worker.start()
    try:
        link = wait_until(
            lambda: next(iter((Path(store.root) / "_runs").glob("*.json")), None), 60,
            "the run to link itself to its job",
        )
        run_id = UUID(link.stem)
        job_id = json.loads(link.read_text())["job_id"]

        def progress() -> float:
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"job-{job_id}-progress"])))
            return arts[0].data if arts else 0

        wait_until(lambda: progress() > 0, 60, "live progress above 0")
        asked = time.monotonic()
        client.set_flow_run_state(run_id, Cancelling())
        worker.join(30)
        assert not worker.is_alive(), "the run did not stop within 30 s of the cancel request"
        stopped_after = time.monotonic() - asked
    finally:
        if worker.is_alive():
            client.set_flow_run_state(run_id, Cancelling(), force=True)
            worker.join(60)

    assert stopped_after < 10
    (state,) = states
    assert state.is_cancelled(), (state.type, state.message)
    assert client.read_flow_run(run_id).state.is_cancelled()
    record = store.read_json(JobLayout(job_id).record)
    assert record["status"] == "cancelled"
    # The work done so far is kept for a resubmission.
    assert store.exists(JobLayout(job_id).checkpoint)
    assert not store.exists(JobLayout(job_id).result)


# --- S3 --------------------------------------------------------------------------------------


def test_a_job_on_s3_reads_and_writes_through_the_s3_api(
    prefect_api, client, s3_settings, tmp_path, monkeypatch
) -> None:
    """Content from an s3:// URL, storage root on S3 (moto's S3 HTTP API on loopback)."""
    settings = configure(
        monkeypatch, tmp_path,
        STYLEDROP_STORAGE="s3://styledrop-test/outputs",
        STYLEDROP_S3_ENDPOINT_URL=s3_settings.s3_endpoint_url,
        STYLEDROP_S3_KEY="testing",
        STYLEDROP_S3_SECRET="testing",
    )
    photo = make_image(tmp_path / "photo.png", (48, 40), seed=11)
    storage.write_bytes("s3://styledrop-test/inbox/photo.png", photo.read_bytes(), settings)
    style = make_image(tmp_path / "style.png", (48, 48), seed=12)

    state = stylize("s3://styledrop-test/inbox/photo.png", [str(style)], FAST,
                    output="s3://styledrop-test/exports/photo.png", return_state=True)

    assert state.is_completed(), state.message
    record = state.result()
    store = Storage(settings.storage_root, settings)
    assert store.read_json(JobLayout(record["job_id"]).record)["status"] == "completed"
    result = Image.open(io.BytesIO(store.read_bytes(JobLayout(record["job_id"]).result)))
    assert result.size == (48, 40)
    assert storage.exists("s3://styledrop-test/exports/photo.png.json", settings)
    # Prefect's persisted result is on S3 too, under the storage root.
    key = client.read_flow_run(state.state_details.flow_run_id).state.data.storage_key
    assert key.startswith("s3://styledrop-test/outputs/_prefect_results/"), key
    assert storage.exists(key, settings)
    # The preview and input artifacts are presigned URLs that a browser (here: httpx) opens.
    images = artifacts_of(client, state.state_details.flow_run_id)["image"]
    assert sorted(a.key.rsplit("-", 1)[1] for a in images) == ["input", "preview"]
    for image in images:
        assert image.data.startswith(s3_settings.s3_endpoint_url)
        response = httpx.get(image.data, timeout=10)
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).format == "JPEG"
