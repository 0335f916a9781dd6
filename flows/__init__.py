"""Prefect side of styledrop: the stylize flow, the inbox sensors, the local stack and the CLI."""

import os

# Everything styledrop starts must not phone home (Prefect server telemetry, Streamlit stats).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
