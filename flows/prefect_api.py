"""Where the Prefect API is: one rule for every part of styledrop that talks to it."""

from __future__ import annotations

import os

from flows.settings import Settings


def api_url(settings: Settings) -> str:
    """PREFECT_API_URL from the environment or the active Prefect profile, else the server
    `styledrop up` starts (`settings.prefect_ui_url` + "/api").

    The environment first: Prefect reads its settings once, at import, and a process (or a
    test) may point PREFECT_API_URL elsewhere after that.
    """
    from prefect.settings import get_current_settings

    url = os.environ.get("PREFECT_API_URL") or get_current_settings().api.url
    return (url or f"{settings.prefect_ui_url}/api").rstrip("/")
