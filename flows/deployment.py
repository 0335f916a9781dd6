"""The one deployment every way in submits to, as the parts outside the flow know it: its
names, the run states that end a run, and a failed run's reason in plain words. No Prefect
import, so the dashboard, which talks to Prefect over plain HTTP, shares them with the flow and
the sensors.
"""

from __future__ import annotations

import re

# The flow's name (flows/stylize.py) and its deployment's (deployments/prefect.yaml).
FLOW_NAME = "stylize"
DEPLOYMENT_NAME = "stylize"
DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"

# Flow run state types after which nothing more happens to a run (Prefect's TERMINAL_STATES).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})

# Prefect words a failed run's state as "Flow run encountered an exception: JobRejected: <why>";
# a person needs only <why>.
_PREFECT_WORDS = re.compile(r"^(?:Flow|Task) run encountered an exception:?\s*")
_EXCEPTION_NAME = re.compile(r"^(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Rejected|Interrupt): ")


def plain_reason(message: str) -> str:
    """A run's state message without Prefect's wording around the exception."""
    return _EXCEPTION_NAME.sub("", _PREFECT_WORDS.sub("", message.strip()), count=1)
