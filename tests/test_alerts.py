"""Alerts through Prefect's own automations and a notification block, against the real Prefect
server (conftest) and a local HTTP receiver standing in for the webhook (Slack, a pager...).

The failures are real runs of the stylize flow, refused at validation; the backlog is a real
flow run of stylize that nothing picks up.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import wait_until

from flows import server_setup
from flows.settings import Settings

pytestmark = pytest.mark.slow


class Receiver:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def with_subject(self, words: str) -> list[dict]:
        return [p for p in self.posts if words in p.get("subject", "")]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def alerting(prefect_api, receiver: Receiver) -> Iterator[Settings]:
    """Alerts set up on the test server with small windows; removed afterwards so that other
    tests' runs on the shared server raise none."""
    settings = Settings(
        alert_webhook_url=receiver.url,
        alert_failures=2,
        alert_failure_window_s=120,
        alert_wait_s=10,  # Prefect's minimum for a proactive trigger
    )
    said = server_setup.set_up_alerts(settings)
    assert "created 'styledrop-alert-failing-runs'" in said or "updated" in said
    yield settings
    said = server_setup.set_up_alerts(Settings(alert_webhook_url=""))
    assert "removed 2 earlier alert automation(s)" in said


def test_no_webhook_no_alerts(prefect_api):
    from prefect.client.orchestration import get_client

    assert "alerts off" in server_setup.set_up_alerts(Settings(alert_webhook_url=""))
    with get_client(sync_client=True) as client:
        for name in server_setup.alert_names():
            assert client.read_automations_by_name(name) == []


def test_setup_is_idempotent_and_keeps_the_url_secret(alerting, receiver):
    from prefect.client.orchestration import get_client

    again = server_setup.set_up_alerts(alerting)
    assert "updated 'styledrop-alert-failing-runs'" in again
    with get_client(sync_client=True) as client:
        [failing] = client.read_automations_by_name("styledrop-alert-failing-runs")
        [backlog] = client.read_automations_by_name("styledrop-alert-backlog")
        assert failing.trigger.threshold == 2
        assert backlog.trigger.within.total_seconds() == 10
        dumped = failing.model_dump_json() + backlog.model_dump_json()
    assert receiver.url not in dumped
    assert receiver.url not in again


def test_repeated_failures_send_one_notification(alerting, receiver, tmp_path: Path):
    from flows.stylize import stylize

    for i in range(2):
        with pytest.raises(Exception, match="not found"):
            stylize(content=str(tmp_path / f"missing-{i}.png"), styles=["mosaic"])
    wait_until(
        lambda: receiver.with_subject("stylize runs are failing"),
        120,
        "the failing-runs notification at the receiver",
        interval=0.5,
    )
    [post] = receiver.with_subject("stylize runs are failing")
    assert "2 stylize runs failed or crashed within 120 s" in post["body"]
    assert "missing-1.png · mosaic" in post["body"]  # the latest run, by its readable name
    assert post["text"].startswith("styledrop: stylize runs are failing: ")


def test_a_run_waiting_too_long_sends_a_notification(alerting, receiver):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Late, Running, Scheduled, State

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("stylize")
        deployment_id = client.create_deployment(flow_id=flow_id, name="stylize")

        def queue(name: str):
            return client.create_flow_run_from_deployment(
                deployment_id, parameters={}, name=name, state=Scheduled()
            )

        # Started in time: no alert. Queued first, so its window closes first.
        started = queue("started.png · waves")
        client.set_flow_run_state(started.id, Running(), force=True)
        waiting = queue("queued.png · waves")
        # Prefect marks a run that is past its start time Late (still a Scheduled state): that
        # must not end the wait.
        client.set_flow_run_state(waiting.id, Late(), force=True)
        try:
            wait_until(
                lambda: receiver.with_subject("a job has waited too long"),
                120,
                "the backlog notification at the receiver",
                interval=0.5,
            )
        finally:
            for run in (started, waiting):
                client.set_flow_run_state(run.id, State(type=StateType.CANCELLED), force=True)
    # This run's alert: the server is shared with other test files, whose leftover queued runs
    # of `stylize` may alert too (CI saw a second post).
    alerts = receiver.with_subject("a job has waited too long")
    posts = [p for p in alerts if "queued.png" in p["body"]]
    assert posts, receiver.posts
    assert '"queued.png · waves" has waited more than 10 s to start' in posts[0]["body"]
    assert not [p for p in receiver.posts if "started.png" in p["body"]]
