"""Which task failures are worth a retry: infrastructure faults (storage or network away for a
moment), never a refused job or a bug."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from flows.settings import get_settings
from flows.storage import is_infrastructure_fault


def retry_on_infrastructure_fault(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed on I/O."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify, not handle
        return is_infrastructure_fault(exc)
    return False


def io_task_options() -> dict[str, Any]:
    """Options for tasks that touch storage: retried on infrastructure faults only.
    Prefect's result caching is off: a job's id in storage is what makes reruns cheap."""
    settings = get_settings()
    return {
        "retries": settings.io_retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=settings.io_retry_delay_s),
        "retry_condition_fn": retry_on_infrastructure_fault,
        "cache_policy": NO_CACHE,
        # The flow persists its result (see flows/stylize.py); tasks need not inherit that.
        "persist_result": False,
    }
