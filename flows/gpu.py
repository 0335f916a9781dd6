"""GPU slots: a Prefect global concurrency limit lets one job per GPU run at a time.

Slots are leases: the holding process renews its lease while the job runs and releases it on
the way out, including when the runner stops it for a cancel (Prefect turns the runner's
SIGTERM into an exception, so the ``finally`` that releases the lease runs). A process that
dies without unwinding (SIGKILL, a lost machine) cannot release anything: its slot comes back
when the server's repossessor sees the lease expire, ``settings.gpu_lease_s`` (Prefect's
minimum is 60 s) plus up to 15 s later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from flows.settings import Settings

logger = logging.getLogger(__name__)


def ensure_gpu_limit(settings: Settings, *, update: bool) -> int:
    """Make sure the GPU limit exists; with ``update`` also set its size to
    ``settings.gpu_slots`` (serve/setup time). Returns the limit's size."""
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(settings.gpu_limit)
        except ObjectNotFound:
            existing = None
        if existing is None:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=settings.gpu_limit, limit=settings.gpu_slots)
                )
                logger.info(
                    "created concurrency limit %s with %d slot(s)",
                    settings.gpu_limit,
                    settings.gpu_slots,
                )
            except ObjectAlreadyExists:  # another process created it a moment ago
                pass
            return settings.gpu_slots
        if update and existing.limit != settings.gpu_slots:
            client.update_global_concurrency_limit(
                settings.gpu_limit, GlobalConcurrencyLimitUpdate(limit=settings.gpu_slots)
            )
            logger.info(
                "concurrency limit %s: %d -> %d slot(s)",
                settings.gpu_limit,
                existing.limit,
                settings.gpu_slots,
            )
            return settings.gpu_slots
        return existing.limit


def active_gpu_slots(settings: Settings) -> int:
    """Slots of the GPU limit in use right now (for tests and the dashboard)."""
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(settings.gpu_limit).active_slots


@contextmanager
def gpu_slot(settings: Settings, flow_run_id: str | None) -> Iterator[None]:
    """Hold one slot of the GPU limit for the duration of the block; waits for a free one.

    A missing limit is created (with ``settings.gpu_slots``) rather than silently skipped:
    without it every job would run on the GPU at once.
    """
    ensure_gpu_limit(settings, update=False)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(flow_run_id)) if flow_run_id else None
    with concurrency(
        settings.gpu_limit,
        occupy=1,
        lease_duration=settings.gpu_lease_s,
        holder=holder,
        # A failed lease renewal (server briefly unreachable) must not kill a long job.
        raise_on_lease_renewal_failure=False,
    ):
        yield
