"""The one deployment every way in submits to, as the parts outside the flow know it: its
names and the run states that end a run. Plain constants (no Prefect import), so the dashboard,
which talks to Prefect over plain HTTP, shares them with the flow and the sensors.
"""

from __future__ import annotations

# The flow's name (flows/stylize.py) and its deployment's (deployments/prefect.yaml).
FLOW_NAME = "stylize"
DEPLOYMENT_NAME = "stylize"
DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"

# Flow run state types after which nothing more happens to a run (Prefect's TERMINAL_STATES).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
