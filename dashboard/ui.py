"""Streamlit glue shared by the pages: one Prefect client per browser session, the storage,
error display and the random-backbone banner. Pages call `guarded(...)` around anything that
talks to Prefect or the storage so a failure reads as a sentence in the page, never as a
traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from dashboard.api import APIError, PrefectAPI
from dashboard.store import DashboardStore, StorageError
from dashboard.views import (
    FALLBACK_BACKBONE_BANNER,
    RANDOM_BACKBONE_BANNER,
    uses_fallback_backbone,
    uses_random_backbone,
)
from flows.prefect_api import api_url
from flows.settings import Settings, get_settings

T = TypeVar("T")


def settings() -> Settings:
    return get_settings()


@st.cache_resource(scope="session", on_release=PrefectAPI.close, show_spinner=False)
def _client(url: str) -> PrefectAPI:
    # Per session, not per server: a session's reruns use its client one at a time, and
    # Streamlit closes it when the session ends.
    return PrefectAPI(url)


def api() -> PrefectAPI:
    return _client(api_url(settings()))


def store() -> DashboardStore:
    return DashboardStore(settings=settings())


def guarded(fn: Callable[[], T], what: str) -> T | None:
    """Run `fn`; on an API or storage failure show `what failed: why` and return None."""
    try:
        return fn()
    except (APIError, StorageError) as exc:
        st.error(f"{what}: {exc}", icon=":material/error:")
    except Exception as exc:  # noqa: BLE001 - the promise is: no tracebacks in the page
        st.error(f"{what}: unexpected {type(exc).__name__}: {exc}", icon=":material/error:")
    return None


@st.cache_data(ttl=30, show_spinner=False)
def _latest_backbone(storage_root: str) -> str | None:
    """The backbone of the newest job that has run far enough to name one (a job that is
    still starting has none yet, and must not hide the banner)."""
    try:
        jobs = DashboardStore(settings=settings()).jobs(limit=5)
    except StorageError:
        return None  # the pages report storage trouble themselves; the banner is a hint
    return next((job.record.backbone for job in jobs if job.record and job.record.backbone), None)


def backbone_banner() -> None:
    s = settings()
    latest = _latest_backbone(s.storage_root)
    if uses_random_backbone(s.backbone, latest):
        st.warning(RANDOM_BACKBONE_BANNER, icon=":material/warning:")
    elif uses_fallback_backbone(s.backbone, latest):
        st.info(FALLBACK_BACKBONE_BANNER, icon=":material/info:")
