"""Everything the sensors say to Prefect: create a run of the ``stylize/stylize`` deployment
(idempotently), read the states of the runs they track, and emit ``styledrop.inbox.*`` events
for the UI's event feed. Errors come out as ``SubmitError`` saying whether a retry may help.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import httpx

from flows.api_auth import refusal
from flows.deployment import DEPLOYMENT, RunView

log = logging.getLogger("styledrop.sensor")

# A flow-run label (not a tag: tags are for people filtering runs, one per source) that tells
# the run this take created from one an idempotency key found (lifecycle.submit).
TAKE_LABEL = "styledrop.take"
# The server answers at most this many runs per query (PREFECT_SERVER_API_DEFAULT_LIMIT).
READ_BATCH = 200


class SubmitError(Exception):
    """Prefect could not create the run. ``retryable``: the server was unreachable or not
    ready (retry later, keep the file); otherwise the request itself was refused."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class PrefectGateway:
    def __init__(self, deployment: str = DEPLOYMENT) -> None:
        self.deployment = deployment

    def submit(
        self, parameters: dict[str, Any], *, key: str, tags: list[str], name: str, take: str
    ) -> RunView:
        """Create (or, for a key already used, find) the flow run. Never waits for it."""
        from prefect import get_client
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Scheduled

        try:
            with get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name(self.deployment)
                run = client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters=parameters,
                    state=Scheduled(),
                    name=name,
                    tags=tags,
                    idempotency_key=key,
                    labels={TAKE_LABEL: take},
                )
        except ObjectNotFound as exc:
            # Usually no worker has registered the deployment yet.
            raise SubmitError(
                f"deployment {self.deployment!r} not found: is a `styledrop worker` (or "
                "`styledrop up`) running?",
                retryable=True,
            ) from exc
        except httpx.HTTPStatusError as exc:
            code = exc.response.status_code
            if code in (401, 403):  # credentials, not the file: keep it waiting
                raise SubmitError(refusal(exc) or "refused", retryable=True) from exc
            detail = _detail(exc.response)
            if code >= 500 or code in (408, 409, 425, 429):
                raise SubmitError(f"Prefect answered {code}: {detail}", retryable=True) from exc
            raise SubmitError(
                f"Prefect refused the run ({code}): {detail}", retryable=False
            ) from exc
        except (httpx.RequestError, OSError) as exc:
            # Connection refused/reset, timeouts, DNS: the server is (briefly) unreachable.
            raise SubmitError(f"Prefect unreachable: {exc!r}", retryable=True) from exc
        return RunView.of(run)

    def run_url(self, run_id: str) -> str | None:
        """The run's page in the Prefect UI, for people reading an error note."""
        from prefect.settings import get_current_settings

        ui = get_current_settings().ui_url
        return f"{str(ui).rstrip('/')}/runs/flow-run/{run_id}" if ui else None

    def read_runs(self, ids: list[str]) -> dict[str, RunView]:
        """The runs among ``ids`` that exist; a missing id means the run is gone. Raises on
        an unreachable server (the caller just asks again later)."""
        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        found: dict[str, RunView] = {}
        with get_client(sync_client=True) as client:
            for i in range(0, len(ids), READ_BATCH):
                batch = [UUID(x) for x in ids[i : i + READ_BATCH]]
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=batch)),
                    limit=len(batch),
                )
                found.update((str(r.id), RunView.of(r)) for r in runs)
        return found

    def emit(
        self,
        event: str,
        *,
        content_sha256: str,
        inbox_rel: str,
        root: str,
        run: RunView | None,
        payload: dict[str, Any],
    ) -> None:
        """A ``styledrop.inbox.*`` event about one dropped file, related to its flow run, so the
        drop shows in the Prefect UI's event feed. Never raises: an event is informative and
        must not stop a file's life cycle."""
        from prefect.events import emit_event

        resource = {
            "prefect.resource.id": f"styledrop.inbox.{content_sha256[:16]}",
            "prefect.resource.name": inbox_rel,
            "styledrop.inbox.path": inbox_rel,
            "styledrop.inbox.root": root,
        }
        related: list[dict[str, str]] = []
        if run is not None:
            related.append(
                {
                    "prefect.resource.id": f"prefect.flow-run.{run.id}",
                    "prefect.resource.role": "flow-run",
                    "prefect.resource.name": run.name,
                }
            )
            if run.deployment_id:
                related.append(
                    {
                        "prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                        "prefect.resource.role": "deployment",
                        "prefect.resource.name": self.deployment,
                    }
                )
        try:
            emit_event(event, resource=resource, related=related, payload=payload)
        except Exception:  # noqa: BLE001 - see docstring
            log.warning("could not emit %s for %s", event, inbox_rel, exc_info=True)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:500]
