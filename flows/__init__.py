"""Prefect side of styledrop: the stylize flow, the inbox sensors, the local stack and the CLI."""

import os

# Nothing styledrop runs phones home: Prefect's server telemetry, Streamlit's usage statistics,
# anything else that honours DO_NOT_TRACK. Set here, when any styledrop module is first
# imported (before Prefect or Streamlit reads them); every process styledrop starts inherits
# them, as its environment is a copy of this one.
TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
}
os.environ.update(TELEMETRY_OFF)
