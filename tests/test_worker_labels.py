"""A run is not crashed because the worker could not label it.

Under load, Prefect's SQLite server answers the labels PATCH with 503 ("database is locked")
after the client's retries, and Prefect's worker then crashes the run before it starts
(seen in tests/test_load*.py). That lock cannot be made to happen on demand, so here the
client's call fails the same way (a stand-in); the load tests cover the real thing."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError

from flows.worker import StyledropWorker


class LockedClient:
    async def update_flow_run_labels(self, flow_run_id: uuid.UUID, labels: dict) -> None:
        request = httpx.Request("PATCH", f"http://server/api/flow_runs/{flow_run_id}/labels")
        response = httpx.Response(503, request=request, json={"exception_message": "locked"})
        raise PrefectHTTPStatusError.from_httpx_error(
            httpx.HTTPStatusError("503", request=request, response=response)
        )


def test_a_failed_label_update_does_not_stop_the_run(caplog: pytest.LogCaptureFixture) -> None:
    worker = StyledropWorker(work_pool_name="styledrop-test")
    worker._client = LockedClient()  # type: ignore[assignment]
    run_id = uuid.uuid4()
    asyncio.run(worker._give_worker_labels_to_flow_run(run_id))  # does not raise
    assert f"could not label flow run {run_id}" in caplog.text
