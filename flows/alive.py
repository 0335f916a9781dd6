"""Liveness of a ``stylize`` run, in one place: the events a run sends, the lost-run automation
that watches them (deployments/recover-lost-runs.yaml), whether another run is still alive
(``run_is_alive``), and undoing a reschedule that came after a run had ended.

While the flow body runs, a thread sends a ``styledrop.run.alive`` event about the flow run
every ``interval_s`` seconds, the first one interval after the start; a run that stops sending
them (its worker or machine died) is rescheduled by the automation and resumes from its
checkpoint.

Why not Prefect's own flow-run heartbeat: its thread runs until the process exits, and its
events reach the server asynchronously, so a heartbeat can be processed after the run's final
state (PrefectHQ/prefect#18653, #21932). Ours stop before the flow returns, but that is not
enough: the server takes a client's events and its own state changes by different paths, and
the alive event is both an `after` and an `expect` event of the automation's proactive trigger.
An alive event evaluated after the run's Failed or Completed event starts a fresh window that
nothing ends (prefect/server/events/triggers.py, the proactive special case), and a window
later the automation put an ended run back in the queue (seen: a run that failed in 0.14 s).
So after its last alive event the run sends ``styledrop.run.ended``, an `expect` event only,
with ``follows`` set to that alive event: Prefect's causal ordering evaluates it after the
alive event, so it ends the window that event opened whatever order the server takes them in.
A run shorter than one interval sends neither: the server's own state events, ordered by
``follows`` too, open and close its window. The events are flushed before the final state is
reported.

Not fixable here: on SQLite under load the server itself can drop a run's final-state event on
its way to the automation ("database is locked", retried at once, then its dead-letter queue),
and the automation reschedules the ended run all the same (measured: one to four of twenty
fast failures, five at once on 2 cores; none in 120 runs on Postgres). Two guards cover that:
the flow persists its result, so the server refuses to reschedule a Completed run, and
``state_before_false_reschedule`` ends a Failed or Cancelled run rescheduled anyway in its old
state as soon as a worker picks it up.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from flows.settings import PROJECT_ROOT, Settings

ALIVE_EVENT = "styledrop.run.alive"
ENDED_EVENT = "styledrop.run.ended"
LOST_RUN_AUTOMATION_FILE = PROJECT_ROOT / "deployments" / "recover-lost-runs.yaml"
# Flow run state types of a run that is working on its job, or about to stop doing so.
OWNER_ALIVE = {"PENDING", "RUNNING", "CANCELLING"}

log = logging.getLogger(__name__)


@contextmanager
def keep_alive(interval_s: float) -> Iterator[None]:
    """Send ``styledrop.run.alive`` for the current flow run every ``interval_s`` until the
    block ends, then ``styledrop.run.ended`` (see the module docstring); outside a flow run
    (tests calling the body directly) it does nothing."""
    from prefect.context import FlowRunContext
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None:
        yield
        return
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{run.id}",
        "prefect.resource.name": run.name,
    }
    # The automation matches runs of `stylize` by this related resource, as Prefect's own
    # flow-run events carry it.
    related = [
        {
            "prefect.resource.id": f"prefect.flow.{run.flow_id}",
            "prefect.resource.role": "flow",
            "prefect.resource.name": ctx.flow.name if ctx.flow else "",
        }
    ]
    stop = threading.Event()
    last: list[Any] = []  # the last alive event sent

    def send(name: str, **more: Any) -> Any:
        try:
            return emit_event(name, resource=resource, related=related, **more)
        except Exception:  # noqa: BLE001 - a missed event must not end the run
            log.debug("could not send %s", name, exc_info=True)

    def beat() -> None:
        while not stop.wait(interval_s):
            if (event := send(ALIVE_EVENT)) is not None:
                last[:] = [event]

    # The context copy carries the flow run's settings (API URL) into the thread.
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(beat,), name="styledrop-alive", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        if last:
            send(ENDED_EVENT, follows=last[0])
        # Deliver them before the final state is reported.
        EventsWorker.drain_all(timeout=30, at_exit=False)


# The lost-run automation's message (deployments/recover-lost-runs.yaml; a test keeps them equal).
RESCHEDULED_MESSAGE = "No heartbeat from this run"


def lost_run_automation(settings: Settings) -> Any:
    """deployments/recover-lost-runs.yaml as an ``AutomationCore``, with the silence window
    from the settings (flows/server_setup.py installs it)."""
    import yaml
    from prefect.events.schemas.automations import AutomationCore

    data = yaml.safe_load(LOST_RUN_AUTOMATION_FILE.read_text())
    # The window is checked against the heartbeat when the settings are loaded.
    data["trigger"]["within"] = settings.lost_run_after_s
    return AutomationCore.model_validate(data)


def state_before_false_reschedule() -> Any:
    """The state to end this run in at once when the lost-run automation put it back in the
    queue after it had already ended (a late event; see the module docstring); else None.

    Completed runs are protected by the server (their result is persisted); a Failed, Crashed
    or Cancelled run could still be rescheduled, and running it again would undo a refusal or
    a cancellation. A person's "Retry" in the UI has another message and runs as asked."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.get_run_count() <= 1:
        return None  # a first attempt: nothing to look back at (and no API call)
    try:
        with get_client(sync_client=True) as client:
            history = client.read_flow_run_states(flow_run.get_id())
    except Exception:  # noqa: BLE001 - unsure: run; the job id keeps a rerun from recomputing
        log.warning("could not read this run's states; running it", exc_info=True)
        return None
    return ended_state_to_restore(history)


def ended_state_to_restore(history: list[Any]) -> Any:
    """From a run's states: a copy of the final state that the automation's reschedule
    interrupted, if the latest reschedule was the automation's and came after a final state."""
    from prefect.states import State

    states = sorted(history, key=lambda s: s.timestamp)
    retries = [i for i, s in enumerate(states) if s.name == "AwaitingRetry"]
    if not retries or retries[-1] == 0:
        return None
    reschedule, before = states[retries[-1]], states[retries[-1] - 1]
    if not (reschedule.message or "").startswith(RESCHEDULED_MESSAGE) or not before.is_final():
        return None
    return State(
        type=before.type,
        name=before.name,
        message=f"{before.message or before.name} (kept: the lost-run automation rescheduled "
        "this run after it had ended; it was not run again)",
    )


def run_is_alive(flow_run_id: str, silent_after_s: float) -> bool:
    """Whether the flow run is working on its job, as the lost-run automation sees it: Pending,
    Running or Cancelling (about to stop), and either in that state for less than
    ``silent_after_s`` or with a ``styledrop.run.alive`` event in the last ``silent_after_s``.
    A run killed with its machine stays Running on the server until the automation puts it
    back in the queue; it counts as lost as soon as it has been silent that long."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )
    from prefect.exceptions import ObjectNotFound

    try:
        run_id = UUID(flow_run_id)
    except ValueError:  # a record written outside a flow run
        return False
    since = datetime.now(UTC) - timedelta(seconds=silent_after_s)
    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(run_id).state
        except ObjectNotFound:
            return False
        if state is None or state.type.value not in OWNER_ALIVE:
            return False
        if state.timestamp >= since:
            return True
        beats = client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=[ALIVE_EVENT]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            ),
            limit=1,
        )
    return bool(beats.events)
