"""Where the ``stylize`` flow's persisted result (Prefect's result record) lives: under the
storage root (``<root>/_prefect_results``, on S3 too), shared by every machine, instead of
each worker's ``~/.prefect/storage``."""

from __future__ import annotations

from typing import Any

from flows.layout import PREFECT_RESULTS
from flows.settings import Settings
from flows.storage import Storage, s3_options


def result_storage(settings: Settings) -> Any:
    """A Prefect filesystem block for ``<storage root>/_prefect_results``."""
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    store = Storage(settings.storage_root, settings)
    url = store.url(PREFECT_RESULTS)
    if store.is_s3:
        return RemoteFileSystem(basepath=url, settings=s3_options(settings))
    return LocalFileSystem(basepath=url)


def use_shared_result_storage(settings: Settings) -> None:
    """Persist the current flow run's result under the storage root.

    ``@flow(result_storage=...)`` is fixed when the module is imported, before the settings of
    the process that runs the flow are known (and a block object there must be saved on the
    server, secrets included); Prefect takes the run's result store from its context when the
    flow returns, so it is pointed at the storage root here, as the run starts. Outside a
    flow run it does nothing."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.result_store is None:
        return
    # No separate metadata store: the file then holds Prefect's whole result record, which
    # reads back anywhere. (With the value alone, Prefect parses a value that has a "result"
    # key, as the job record has, as a record of its own and fails to read it.)
    ctx.result_store = ctx.result_store.model_copy(
        update={"result_storage": result_storage(settings), "metadata_storage": None}
    )
