"""The pure parts of scale-out: which GPUs a machine serves, the names and environment of its
workers, the deployment from deployments/prefect.yaml and the lost-run automation built from
deployments/recover-lost-runs.yaml."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flows.alive import lost_run_automation
from flows.commands.worker import plan_workers, visible_gpus
from flows.server_setup import deployment_spec
from flows.settings import Settings


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("0,1", ["0", "1"]),
        (" 2 , 3 ", ["2", "3"]),
        ("", []),
        ("-1", []),
        ("1,-1,2", ["1"]),  # CUDA ignores everything from an invalid entry on
        ("GPU-8f2a,GPU-77c1", ["GPU-8f2a", "GPU-77c1"]),
    ],
)
def test_visible_gpus_follow_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch, visible: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpus() == expected


def test_one_worker_per_gpu_each_owning_its_gpu() -> None:
    slots = plan_workers("gpu-box", ["0", "3"], 2)
    assert [(s.worker_name, s.gpu, s.limit) for s in slots] == [
        ("gpu-box-gpu0", "0", 2),
        ("gpu-box-gpu3", "3", 2),
    ]
    assert slots[1].env() == {"CUDA_VISIBLE_DEVICES": "3"}


def test_without_a_gpu_one_cpu_worker_that_hides_every_gpu() -> None:
    (slot,) = plan_workers("laptop", [], 1)
    assert (slot.worker_name, slot.gpu, slot.limit) == ("laptop", "cpu", 1)
    assert slot.env()["CUDA_VISIBLE_DEVICES"] == ""


def test_the_deployment_comes_from_prefect_yaml_on_the_styledrop_pool_type() -> None:
    spec = deployment_spec()
    assert spec["name"] == "stylize" and spec["entrypoint"] == "flows/stylize.py:stylize"
    assert spec["work_pool"]["name"] == Settings().work_pool


def test_the_deployment_names_everyone_submits_to_are_the_flow_and_prefect_yaml_ones() -> None:
    from flows.deployment import DEPLOYMENT, DEPLOYMENT_NAME, FLOW_NAME
    from flows.stylize import stylize

    assert deployment_spec()["name"] == DEPLOYMENT_NAME
    assert stylize.name == FLOW_NAME and DEPLOYMENT == "stylize/stylize"


def test_the_recovery_automation_takes_its_window_from_the_settings() -> None:
    spec = lost_run_automation(Settings(heartbeat_s=30, lost_run_after_s=90))
    assert spec.name == "styledrop-recover-lost-runs"
    assert spec.trigger.posture == "Proactive"
    assert spec.trigger.within == timedelta(seconds=90)
    # Our own liveness event, not Prefect's heartbeat (see flows/alive.py).
    assert "styledrop.run.alive" in spec.trigger.after & spec.trigger.expect
    # The run's end closes a silence and starts none (flows/alive.py).
    assert "styledrop.run.ended" in spec.trigger.expect - spec.trigger.after
    assert not any("heartbeat" in e for e in spec.trigger.after | spec.trigger.expect)
    # A run being cancelled or already finished is left alone.
    assert {"prefect.flow-run.Cancelling", "prefect.flow-run.Completed"} <= spec.trigger.expect
    (action,) = spec.actions
    assert (action.type, action.state.value, action.name, action.force) == (
        "change-flow-run-state",
        "SCHEDULED",
        "AwaitingRetry",
        False,
    )


def test_the_automation_message_is_the_one_the_flow_looks_for() -> None:
    from flows.alive import RESCHEDULED_MESSAGE

    (action,) = lost_run_automation(Settings()).actions
    assert action.message.startswith(RESCHEDULED_MESSAGE)


def _states(*spec: tuple[str, str, str]) -> list:
    """States from (type, name, message), one second apart, given out of order."""
    from datetime import UTC, datetime, timedelta

    from prefect.states import State, StateType

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    made = [
        State(type=StateType(kind), name=name, message=msg, timestamp=t0 + timedelta(seconds=i))
        for i, (kind, name, msg) in enumerate(spec)
    ]
    return made[::-1]


LOST = "No heartbeat from this run: its worker or machine was lost."


def test_a_failed_or_cancelled_run_rescheduled_by_the_automation_keeps_its_end() -> None:
    from flows.alive import ended_state_to_restore

    for kind, name in (("FAILED", "Failed"), ("CANCELLED", "Cancelled")):
        history = _states(
            ("SCHEDULED", "Scheduled", ""),
            ("RUNNING", "Running", ""),
            (kind, name, "why it ended"),
            ("SCHEDULED", "AwaitingRetry", LOST),
            ("PENDING", "Pending", ""),
            ("RUNNING", "Running", ""),
        )
        kept = ended_state_to_restore(history)
        assert kept is not None and (kept.type.value, kept.name) == (kind, name)
        assert kept.message.startswith("why it ended (kept:")


def test_a_lost_run_or_a_retry_asked_for_by_a_person_runs_again() -> None:
    from flows.alive import ended_state_to_restore

    lost_while_running = _states(
        ("RUNNING", "Running", ""),
        ("SCHEDULED", "AwaitingRetry", LOST),
        ("RUNNING", "Running", ""),
    )
    retried_by_hand = _states(
        ("FAILED", "Failed", "boom"),
        ("SCHEDULED", "AwaitingRetry", "Retry from the UI"),
        ("RUNNING", "Running", ""),
    )
    assert ended_state_to_restore(lost_while_running) is None
    assert ended_state_to_restore(retried_by_hand) is None
    assert ended_state_to_restore(_states(("RUNNING", "Running", ""))) is None
