"""The few questions the dashboard asks the Prefect API, asked with Prefect's own sync client.

Runs come back as `RunView`s (flows/deployment.py), as the sensors see them. Every failure
comes out as `APIError` with a sentence a person can act on; pages show it with `st.error`.
One `PrefectAPI` serves one browser session (`ui.api`): Streamlit runs a session's reruns one
at a time, each in some thread, which Prefect's sync client (an httpx.Client) allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    DeploymentFilter,
    FlowFilter,
    FlowRunFilter,
)
from prefect.client.schemas.responses import SetStateStatus
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from prefect.context import SettingsContext, get_settings_context
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES
from prefect.states import Cancelled, Cancelling

from flows.api_auth import refused_sentence
from flows.deployment import (
    DEPLOYMENT,
    DEPLOYMENT_NAME,
    FLOW_NAME,
    REFUSED_EVENT,
    SUBMITTER_TAG,
    RunView,
)
from flows.layout import JobLayout
from flows.naming import run_name

# One tag per way in (the sensors tag theirs "inbox" and "s3"), never one per file.
SOURCE_TAG = "dashboard"
# Short: a dashboard refresh must not hang on a dead server.
TIMEOUT = httpx.Timeout(5.0, connect=2.0)
# A run has at most three artifacts (progress, photo, preview): room for a page of runs.
ARTIFACTS_READ = 200
# The most events Prefect's API returns in one page.
EVENTS_READ = 50


class APIError(Exception):
    """The Prefect API could not be reached or refused a request; str() is for people."""


@dataclass(frozen=True)
class Artifacts:
    """What the flow's artifacts say of some runs, by run id (ARCHITECTURE.md, the flow)."""

    # Percent done (0..100); a run missing here has not got its GPU yet.
    progress: dict[str, float] = field(default_factory=dict)
    photos: dict[str, str] = field(default_factory=dict)  # the input photo's URL
    previews: dict[str, str] = field(default_factory=dict)  # the latest preview's URL


@dataclass(frozen=True)
class Refusal:
    """A dropped file the inbox sensor refused before any run was made."""

    when: datetime
    path: str  # as dropped, relative to the inbox
    reason: str


class PrefectAPI:
    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        # The dashboard's Prefect settings: this API, and no retries of its own (Prefect's
        # back-off would hang a page for a minute; the page asks again at its next refresh).
        # Entered around each call, in the thread that makes it (Prefect's settings are a
        # context variable, and Streamlit runs each rerun in a thread of its own).
        context = get_settings_context()
        self._profile = context.profile
        self._settings = context.settings.copy_with_update(
            updates={PREFECT_API_URL: api_url, PREFECT_CLIENT_MAX_RETRIES: 0}
        )
        with self._prefect_settings():
            # Prefect's client sends PREFECT_API_AUTH_STRING (or the API key) by itself.
            self._client = get_client(sync_client=True, httpx_settings={"timeout": TIMEOUT})
        self._client.__enter__()

    def close(self) -> None:
        self._client.__exit__(None, None, None)

    def _prefect_settings(self) -> SettingsContext:
        return SettingsContext(profile=self._profile, settings=self._settings)

    @contextmanager
    def _asking(self) -> Iterator[None]:
        """Prefect's and httpx's exceptions as sentences for people."""
        try:
            with self._prefect_settings():
                yield
        except httpx.HTTPStatusError as exc:
            code, request = exc.response.status_code, exc.request
            if code in (401, 403):
                raise APIError(refused_sentence(self.api_url)) from exc
            raise APIError(
                f"The Prefect API refused {request.method} {request.url.path} ({code}): "
                f"{_detail(exc.response)}"
            ) from exc
        except httpx.ConnectError as exc:
            raise APIError(
                f"Cannot reach the Prefect API at {self.api_url}. Is the Prefect server running? "
                "(`styledrop up` starts one; PREFECT_API_URL says where it is.)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise APIError(
                f"The Prefect API at {self.api_url} did not answer in time; it may be overloaded."
            ) from exc
        except httpx.HTTPError as exc:
            raise APIError(f"Talking to the Prefect API at {self.api_url} failed: {exc}") from exc

    # --- reads ----------------------------------------------------------------------------
    def runs(self, state_types: list[str] | None = None, limit: int = 50) -> list[RunView]:
        """Recent runs of the stylize deployment, newest first."""
        with self._asking():
            runs = self._client.read_flow_runs(
                flow_filter=FlowFilter(name={"any_": [FLOW_NAME]}),
                deployment_filter=DeploymentFilter(name={"any_": [DEPLOYMENT_NAME]}),
                flow_run_filter=(
                    FlowRunFilter(state={"type": {"any_": state_types}}) if state_types else None
                ),
                # Expected start is set when a run is created, so it orders scheduled runs too.
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit,
            )
        return [RunView.of(run) for run in runs]

    def run(self, run_id: str) -> RunView:
        with self._asking():
            try:
                return RunView.of(self._client.read_flow_run(UUID(run_id)))
            except (ValueError, ObjectNotFound):  # not an id, or no such run
                raise APIError(f"There is no flow run with id {run_id!r}.") from None

    def artifacts(self, run_ids: list[str]) -> Artifacts:
        """The newest progress, photo and preview of each run, in one request."""
        found = Artifacts()
        if not run_ids:
            return found
        with self._asking():
            artifacts = self._client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id={"any_": run_ids}, type={"any_": ["progress", "image"]}
                ),
                sort=ArtifactSort.CREATED_DESC,
                limit=ARTIFACTS_READ,
            )
        for art in artifacts:
            run_id = str(art.flow_run_id)
            if art.type == "progress" and isinstance(art.data, int | float):
                found.progress.setdefault(run_id, max(0.0, min(100.0, float(art.data))))
            elif art.type == "image" and art.data:
                is_input = JobLayout.is_input_key(art.key)
                (found.photos if is_input else found.previews).setdefault(run_id, str(art.data))
        return found

    def refusals(self, limit: int = 20) -> list[Refusal]:
        """Files the inbox sensors refused without a run, newest first, from their
        `styledrop.inbox.failed` events (kept as long as the server keeps events: 7 days by
        default). A refused file made no run, so the runs table cannot show it."""
        with self._asking():
            # Failures of files that had a run come back too (filtered out below): a full page.
            page = self._client.read_events(
                EventFilter(event=EventNameFilter(name=[REFUSED_EVENT])), limit=EVENTS_READ
            )
        found = [
            Refusal(
                when=event.occurred,
                path=str(event.payload.get("path") or event.resource.name or "?"),
                reason=str(event.payload.get("reason") or "no reason given"),
            )
            for event in page.events
            if not any(r.role == "flow-run" for r in event.related)
        ]
        return sorted(found, key=lambda r: r.when, reverse=True)[:limit]

    # --- writes ---------------------------------------------------------------------------
    def create_run(self, parameters: dict[str, Any], submitter: str | None = None) -> RunView:
        """A run of the deployment, tagged as the dashboard's (and with who started it, when
        someone is signed in)."""
        tags = [SOURCE_TAG] + ([SUBMITTER_TAG + submitter] if submitter else [])
        with self._asking():
            try:
                deployment = self._client.read_deployment_by_name(DEPLOYMENT)
            except ObjectNotFound:
                raise APIError(
                    f"The deployment {DEPLOYMENT} does not exist on {self.api_url}. "
                    "Start `styledrop worker` (or `styledrop up`)."
                ) from None
            run = self._client.create_flow_run_from_deployment(
                deployment.id,
                parameters=parameters,
                tags=tags,
                # Named now, as the flow will name it when it starts (flows/naming.py), so
                # the run reads the same while it waits.
                name=run_name(parameters),
            )
        return RunView.of(run)

    def cancel(self, run: RunView) -> str:
        """Ask Prefect to stop a run; returns the state it was moved to.

        A run that has not started has nothing to stop, so it goes straight to Cancelled;
        anything else goes to Cancelling, which the worker running it turns into a real stop.
        """
        if run.is_final:
            raise APIError(f"The run already finished ({run.state_name}); nothing to cancel.")
        make = Cancelled if run.state_type == "SCHEDULED" else Cancelling
        state = make(message="Cancelled from the dashboard")
        with self._asking():
            result = self._client.set_flow_run_state(run.id, state)
        if result.status != SetStateStatus.ACCEPT:
            reason = getattr(result.details, "reason", None) or result.status.value
            raise APIError(f"Prefect did not accept the cancel request: {reason}")
        return state.name


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail or response.text[:300] or response.reason_phrase)
