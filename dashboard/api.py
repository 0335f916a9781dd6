"""A thin, synchronous client for the few Prefect REST endpoints the dashboard uses.

Plain httpx rather than Prefect's client: Streamlit reruns scripts in worker threads, and the
sync REST calls here need no event loop, settings context or retries of their own. Every failure
surfaces as `APIError` with a sentence a person can act on; pages show it with `st.error`.
Results are plain dataclasses built from the JSON, so the pages never see raw responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from flows.deployment import DEPLOYMENT, DEPLOYMENT_NAME, FINAL_STATES, FLOW_NAME
from flows.naming import run_name
from flows.prefect_api import api_url as default_api_url
from flows.settings import get_settings

# One tag per way in (the sensors tag theirs "inbox" and "s3"), never one per file.
SOURCE_TAG = "dashboard"
# The flow's image artifact of the input photo has a key ending in this
# (flows.tasks.progress.input_key); every other image artifact is the run's preview.
INPUT_KEY_SUFFIX = "-input"
# Short: a dashboard refresh must not hang on a dead server.
TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class APIError(Exception):
    """The Prefect API could not be reached or refused a request; str() is for people."""


@dataclass(frozen=True)
class Run:
    """One flow run of the stylize deployment, as the dashboard needs it."""

    id: str
    name: str
    state_type: str  # SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CANCELLING, ...
    state_name: str  # e.g. "Late", "AwaitingConcurrencySlot": finer than the type
    state_message: str
    parameters: dict[str, Any] = field(default_factory=dict)
    expected_start: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    total_run_time: float = 0.0
    estimated_run_time: float = 0.0

    @property
    def is_final(self) -> bool:
        return self.state_type in FINAL_STATES

    @property
    def duration_s(self) -> float | None:
        """Seconds it ran (so far, for a running run); None before it started."""
        if self.start_time is None:
            return None
        if self.is_final:
            return self.total_run_time or (
                (self.end_time - self.start_time).total_seconds() if self.end_time else None
            )
        return self.estimated_run_time or self.total_run_time

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        state = data.get("state") or {}
        return cls(
            id=str(data["id"]),
            name=data.get("name") or "",
            state_type=data.get("state_type") or state.get("type") or "UNKNOWN",
            state_name=data.get("state_name") or state.get("name") or "Unknown",
            state_message=state.get("message") or "",
            parameters=data.get("parameters") or {},
            expected_start=_time(data.get("expected_start_time")),
            start_time=_time(data.get("start_time")),
            end_time=_time(data.get("end_time")),
            total_run_time=float(data.get("total_run_time") or 0.0),
            estimated_run_time=float(data.get("estimated_run_time") or 0.0),
        )


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class PrefectAPI:
    def __init__(self, api_url: str | None = None, transport: httpx.BaseTransport | None = None):
        self.api_url = (api_url or default_api_url(get_settings())).rstrip("/")
        self._http = httpx.Client(base_url=self.api_url, timeout=TIMEOUT, transport=transport)

    def close(self) -> None:
        self._http.close()

    # --- plumbing -------------------------------------------------------------------------
    def _request(self, method: str, path: str, json: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=json)
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
        if response.status_code >= 400:
            raise APIError(
                f"The Prefect API refused {method} {path} ({response.status_code}): "
                f"{_detail(response)}"
            )
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # --- reads ----------------------------------------------------------------------------
    def health(self) -> bool:
        return bool(self._request("GET", "/health"))

    def deployment_id(self) -> str:
        try:
            data = self._request("GET", f"/deployments/name/{FLOW_NAME}/{DEPLOYMENT_NAME}")
        except APIError as exc:
            if "(404)" in str(exc):
                raise APIError(
                    f"The deployment {DEPLOYMENT} does not exist on "
                    f"{self.api_url}. Start `styledrop worker` (or `styledrop up`)."
                ) from exc
            raise
        return str(data["id"])

    def runs(self, state_types: list[str] | None = None, limit: int = 50) -> list[Run]:
        """Recent runs of the stylize deployment, newest first."""
        body: dict[str, Any] = {
            "flows": {"name": {"any_": [FLOW_NAME]}},
            "deployments": {"name": {"any_": [DEPLOYMENT_NAME]}},
            # Expected start is set when a run is created, so it orders scheduled runs too.
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": limit,
        }
        if state_types:
            body["flow_runs"] = {"state": {"type": {"any_": state_types}}}
        return [Run.from_json(r) for r in self._request("POST", "/flow_runs/filter", body)]

    def run(self, run_id: str) -> Run:
        try:
            return Run.from_json(self._request("GET", f"/flow_runs/{run_id}"))
        except APIError as exc:
            if "(404)" in str(exc) or "(422)" in str(exc):
                raise APIError(f"There is no flow run with id {run_id!r}.") from exc
            raise

    def _artifacts(self, run_ids: list[str], kind: str) -> list[dict[str, Any]]:
        """Artifacts of type `kind` of these runs, newest first."""
        if not run_ids:
            return []
        body = {
            "artifacts": {"flow_run_id": {"any_": run_ids}, "type": {"any_": [kind]}},
            "sort": "CREATED_DESC",
            "limit": 200,
        }
        return list(self._request("POST", "/artifacts/filter", body) or [])

    def _latest(self, run_ids: list[str], kind: str) -> dict[str, Any]:
        """The newest artifact data of type `kind` per run: {run_id: data}."""
        latest: dict[str, Any] = {}
        for art in self._artifacts(run_ids, kind):
            latest.setdefault(str(art.get("flow_run_id")), art.get("data"))
        return latest

    def progress(self, run_ids: list[str]) -> dict[str, float]:
        """Progress in percent (0..100) per run, from the flow's progress artifacts.

        The flow creates a run's progress artifact when its job gets the GPU: a run that is
        not in this dict has not started computing (ARCHITECTURE.md)."""
        out: dict[str, float] = {}
        for run_id, data in self._latest(run_ids, "progress").items():
            try:
                out[run_id] = max(0.0, min(100.0, float(data)))
            except (TypeError, ValueError):
                continue
        return out

    def images(self, run_ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """(input photo URL, latest preview URL) per run, from the flow's image artifacts:
        one request for both."""
        photos: dict[str, str] = {}
        previews: dict[str, str] = {}
        for art in self._artifacts(run_ids, "image"):
            if not art.get("data"):
                continue
            is_input = str(art.get("key") or "").endswith(INPUT_KEY_SUFFIX)
            (photos if is_input else previews).setdefault(
                str(art.get("flow_run_id")), str(art["data"])
            )
        return photos, previews

    def previews(self, run_ids: list[str]) -> dict[str, str]:
        """Latest preview URL per run, from the flow's image artifacts."""
        return self.images(run_ids)[1]

    def summary(self, run_id: str) -> str | None:
        """The flow's markdown summary of a run, if it wrote one."""
        return self._latest([run_id], "markdown").get(run_id)

    # --- writes ---------------------------------------------------------------------------
    def create_run(self, parameters: dict[str, Any]) -> Run:
        deployment_id = self.deployment_id()
        # Named now, as the flow will name it when it starts (flows/naming.py), so the run
        # reads the same while it waits.
        body = {"parameters": parameters, "tags": [SOURCE_TAG], "name": run_name(parameters)}
        return Run.from_json(
            self._request("POST", f"/deployments/{deployment_id}/create_flow_run", body)
        )

    def cancel(self, run: Run) -> str:
        """Ask Prefect to stop a run; returns the state it was moved to.

        A run that has not started has nothing to stop, so it goes straight to Cancelled;
        anything else goes to Cancelling, which the runner serving it turns into a real stop.
        """
        if run.is_final:
            raise APIError(f"The run already finished ({run.state_name}); nothing to cancel.")
        target = (
            ("CANCELLED", "Cancelled")
            if run.state_type == "SCHEDULED"
            else ("CANCELLING", "Cancelling")
        )
        body = {
            "state": {
                "type": target[0],
                "name": target[1],
                "message": "Cancelled from the dashboard",
            }
        }
        result = self._request("POST", f"/flow_runs/{run.id}/set_state", body)
        status = (result or {}).get("status")
        if status != "ACCEPT":
            reason = ((result or {}).get("details") or {}).get("reason") or status
            raise APIError(f"Prefect did not accept the cancel request: {reason}")
        return target[1]


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.text[:300] or response.reason_phrase)
