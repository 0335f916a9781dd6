"""Where the Prefect API is: one rule for every part of styledrop that talks to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from flows.settings import Settings


def local_api_url(settings: Settings) -> str:
    """The API of the server `styledrop up` starts (what its own children talk to)."""
    return f"{settings.prefect_ui_url}/api"


def api_url(settings: Settings) -> str:
    """PREFECT_API_URL from the environment or the active Prefect profile, else the server
    `styledrop up` starts (``local_api_url``).

    The environment first: Prefect reads its settings once, at import, and a process (or a
    test) may point PREFECT_API_URL elsewhere after that.
    """
    from prefect.settings import get_current_settings

    url = os.environ.get("PREFECT_API_URL") or get_current_settings().api.url
    return (url or local_api_url(settings)).rstrip("/")


def ui_url(settings: Settings) -> str:
    """The Prefect UI as browsers reach it, for links: PREFECT_UI_URL (which Prefect derives
    from PREFECT_API_URL when unset), else the server `styledrop up` starts."""
    from prefect.settings import get_current_settings

    url = os.environ.get("PREFECT_UI_URL") or get_current_settings().ui_url
    return str(url or settings.prefect_ui_url).rstrip("/")


@contextmanager
def connected(settings: Settings) -> Iterator[str]:
    """This process's Prefect client on ``api_url(settings)``, and the processes it starts
    (PREFECT_API_URL in the environment): never a temporary server that would vanish with
    this process, taking the runs created on it along."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = api_url(settings)
    os.environ["PREFECT_API_URL"] = url
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url
