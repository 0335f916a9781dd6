"""The words the sensor leaves for people: a failed run's reason as a user can read it, and the
error note written beside a file in failed/ (``<name>.error.txt``)."""

from __future__ import annotations

from flows.deployment import RunView, plain_reason
from flows.jobs import timestamp
from flows.sensors.take import Take


def failure_reason(message: str | None, processing_url: str, inbox_url: str) -> str:
    """A failed run's message as the user can read it: without Prefect's "Flow run
    encountered an exception: <type>:" and naming the file where it was dropped."""
    if not message:
        return "the run failed without a message"
    return plain_reason(message).replace(processing_url, inbox_url)


def error_note(take: Take, run: RunView | None, run_url: str | None) -> str:
    """The note for failed/: why, which file, which run (with its UI link), and what to do."""
    lines = [
        "styledrop could not stylise this file.",
        "",
        f"Reason:   {take.reason}",
        f"File:     {take.inbox_rel} (as dropped into inbox/)",
    ]
    if take.flow_run_id:
        lines.append(f"Flow run: {take.flow_run_name or '(unnamed)'} ({take.flow_run_id})")
        if run_url:
            lines.append(f"          {run_url}")
    else:
        lines.append("Flow run: none (refused before a run was started)")
    if run is not None:
        when = run.state_time.isoformat() if run.state_time else ""
        lines.append(f"State:    {run.state_name} at {when}")
    if take.attempts:
        lines.append(f"Resubmitted {take.attempts} time(s) after crashes.")
    lines += [
        f"Time:     {timestamp()}",
        "",
        "To try again, fix the cause and drop the file into inbox/ again",
        "(the history of this attempt is in the .run.json file beside it).",
    ]
    return "\n".join(lines) + "\n"
