"""styledrop's own Prefect worker type: a warm process per GPU that runs each flow run of
`stylize` in a thread of its own process.

Prefect's process worker (and ``flow.serve``) start a new Python process per flow run: imports,
CUDA start-up, loading the weights and cuDNN autotuning every time - seconds to tens of
seconds per job, against 1-3 s of work for a default job on a GPU. This worker pays them once:
it loads the backbone when it starts (on a GPU it also runs one small job at the default size,
so cuDNN has picked its algorithms), then runs each flow run with
``prefect.flow_engine.run_flow`` in a thread. The engine's process-level backbone cache
(``engine.backbone.load_backbone``) is what every run then reuses.

- At most ``limit`` runs at once (the GPU's slots; Prefect's worker limit). When one ends the
  worker asks for the next at once instead of waiting for its next poll.
- Cancel: the flow polls its own state (``flows.tasks.progress.JobMonitor``) and stops; the
  worker goes on.
- Stop (SIGTERM/SIGINT): no new runs; running ones get ``grace`` seconds to finish. Then (or at
  a second signal) each running job writes a checkpoint and parks its thread, the worker hands
  the runs back to the pool (AwaitingRetry, ``flows.handback``) and the process exits; another
  worker resumes them from their checkpoints.
- A run that fails with the GPU left unusable (a CUDA error) stops the worker with exit code 1,
  its other runs handed back, so that what supervises it starts a fresh process.
- Killed outright (SIGKILL, a lost machine): the lost-run automation reschedules its runs.

Started by `styledrop worker` (flows/commands/worker.py: the GPU plan, one process per GPU) or
by Prefect's own `prefect worker start --type styledrop` (``start``; Prefect finds the type
through the `prefect.collections` entry point in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from typing import Any

import anyio
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, PREFECT_WORKER_QUERY_SECONDS
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

from flows import handback, stack
from flows.settings import Settings, get_settings

WORKER_TYPE = "styledrop"
# Seconds a stopping worker waits for its running jobs to checkpoint (at their next engine step)
# before it hands them back anyway.
PARK_TIMEOUT_S = 30.0

log = logging.getLogger("styledrop.worker")


class StyledropResult(BaseWorkerResult):
    """How a flow run ended in this worker (status 0: the flow engine reported its state)."""


class StyledropWorker(BaseWorker[BaseJobConfiguration, BaseVariables, StyledropResult]):
    type = WORKER_TYPE
    job_configuration = BaseJobConfiguration
    _description = (
        "styledrop: runs stylize flow runs in threads of one warm process per GPU, with the "
        "model loaded once (`styledrop worker`)."
    )
    _display_name = "styledrop warm GPU worker"

    def __init__(
        self,
        work_pool_name: str,
        *,
        limit: int | None = None,
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> None:
        self.settings = settings or get_settings()
        # Runs are taken when due, not ahead: a run another worker could start now must not
        # wait behind this worker's current job. No limit given (`prefect worker start`
        # without --limit): the GPU's slots, never unlimited.
        kwargs["prefetch_seconds"] = 0
        super().__init__(work_pool_name, limit=limit or self.settings.gpu_slots, **kwargs)
        self.active: dict[str, FlowRun] = {}  # flow run id -> run, while its thread runs
        self.gpu_broken = False
        self._stylize_ids: set[Any] = set()  # flow ids known to be `stylize`
        self._wake = anyio.Event()

    async def _give_worker_labels_to_flow_run(self, flow_run_id: Any) -> None:
        # The labels only name the worker that took the run, but Prefect crashes the run when
        # setting them fails: on a busy SQLite server the PATCH can still answer 503 ("database
        # is locked") after the client's retries, and the job was crashed before it started
        # (tests/test_load_restart.py). Run it unlabelled instead.
        try:
            await super()._give_worker_labels_to_flow_run(flow_run_id)
        except Exception as exc:  # noqa: BLE001 - informative only; the run goes on
            log.warning("could not label flow run %s with this worker: %s", flow_run_id, exc)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: BaseJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> StyledropResult:
        from flows.stylize import stylize

        if flow_run.flow_id not in self._stylize_ids:
            flow = await self.client.read_flow(flow_run.flow_id)
            if flow.name == stylize.name:
                self._stylize_ids.add(flow_run.flow_id)
        if flow_run.flow_id not in self._stylize_ids:
            raise RuntimeError(
                f"a styledrop worker runs only the {stylize.name!r} flow, not {flow.name!r}"
            )
        if task_status is not None:
            task_status.started(os.getpid())
        run_id = str(flow_run.id)
        self.active[run_id] = flow_run
        try:
            state = await in_thread(
                run_flow_thread,
                stylize,
                flow_run,
                PREFECT_API_URL.value(),
                name=f"run-{run_id[:8]}",
            )
        finally:
            self.active.pop(run_id, None)
        if state is not None and (state.is_failed() or state.is_crashed()):
            self.check_gpu()
        return StyledropResult(identifier=str(os.getpid()), status_code=0)

    def check_gpu(self) -> None:
        """After a failed run: is the GPU still usable? A CUDA error leaves the context broken
        for every later job, so the worker must be replaced, not go on failing."""
        if not gpu_usable(self.settings):
            self.gpu_broken = True
            self._logger.error("the GPU is unusable after a failed run (a CUDA error): stopping")

    async def start(
        self, run_once: bool = False, with_healthcheck: bool = False, printer: Any = print
    ) -> None:
        """What `prefect worker start --type styledrop` runs: ``serve`` with the grace from
        STYLEDROP_WORKER_GRACE_S, exiting 1 when the GPU broke. ``run_once`` is not supported;
        Prefect's CLI serves ``--with-healthcheck`` itself."""
        if code := await self.serve(self.settings.worker_grace_s):
            raise SystemExit(code)

    async def serve(self, grace: float) -> int:
        """Poll, run, and stop as the module docstring says. Returns the exit code."""
        loop = asyncio.get_running_loop()
        # Acted on in the loop, not in the signal handler (which may interrupt a print).
        with stack.Signals(lambda *got: loop.call_soon_threadsafe(self._stopping, *got)) as stop:
            return await self._serve(grace, stop)

    async def _serve(self, grace: float, stop: stack.Signals) -> int:
        async with self:
            await asyncio.to_thread(warm_up, self.settings, self._logger)
            self._started_event = await self._emit_worker_started_event()
            print(
                f"styledrop worker {self.name!r} ready: {self.limiter.total_tokens:g} job(s) at "
                f"once on pool {self._work_pool_name!r}",
                flush=True,
            )
            async with anyio.create_task_group() as loops:
                loops.start_soon(self._heartbeats)
                await self._poll_until(stop)
                loops.cancel_scope.cancel()
            await self._drain(grace, stop)
            self._runs_task_group.cancel_scope.cancel()  # parked threads are not waited for
        return 1 if self.gpu_broken else 0

    def _stopping(self, signum: int, count: int) -> None:
        what = "no new jobs; running ones may finish" if count == 1 else "handing back now"
        print(f"styledrop worker: {signal.Signals(signum).name}: {what}", flush=True)
        self._wake.set()

    def _release_limit_slot(self, flow_run_id: Any) -> None:
        super()._release_limit_slot(flow_run_id)
        self._wake.set()  # a slot is free: ask for the next run now, not at the next poll

    async def _poll_until(self, stop: stack.Signals) -> None:
        interval = PREFECT_WORKER_QUERY_SECONDS.value()
        while not stop and not self.gpu_broken:
            # Before polling: a run that ends (or a signal) while we poll wakes the next poll.
            self._wake = anyio.Event()
            if self.limiter.available_tokens < 1:
                # Every slot busy: asking the server for runs now would only load it. The
                # slot's release wakes this loop.
                await self._wake.wait()
                continue
            try:
                await self.get_and_submit_flow_runs()
            except Exception as exc:  # noqa: BLE001 - the server may be restarting
                self._logger.warning("could not get flow runs: %s", exc)
            with anyio.move_on_after(interval):
                await self._wake.wait()

    async def _heartbeats(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_interval_seconds)
            try:
                await self.sync_with_backend()
            except Exception as exc:  # noqa: BLE001
                self._logger.warning("worker heartbeat failed: %s", exc)

    async def _drain(self, grace: float, stop: stack.Signals) -> None:
        """Let running jobs finish for ``grace`` s (not when the GPU is broken), then
        checkpoint and hand back what is left."""
        asked = stop.count
        if self.active and not self.gpu_broken:
            self._logger.info(
                "stopping: %d running job(s) get %g s to finish", len(self.active), grace
            )
            deadline = time.monotonic() + grace
            while self.active and time.monotonic() < deadline and stop.count <= asked:
                await anyio.sleep(0.1)
        if not self.active:
            return
        handback.request()
        # A job in the engine checkpoints and parks within a step; one in another step (input
        # checks, writing its result) finishes it first or is handed back as it is.
        deadline = time.monotonic() + PARK_TIMEOUT_S
        while (set(self.active) - handback.parked()) and time.monotonic() < deadline:
            await anyio.sleep(0.1)
        done = await asyncio.to_thread(handback.hand_back, list(self.active.values()))
        self._logger.info("handed %d unfinished run(s) back to the pool", done)
        print(
            f"styledrop worker {self.name!r}: handed {done} unfinished run(s) back to the pool",
            flush=True,
        )


async def in_thread(fn: Any, *args: Any, name: str) -> Any:
    """``fn(*args)`` in a daemon thread: a job parked for hand-back must not keep the process
    from exiting (anyio's worker threads would be joined at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await done


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled (hand-back)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def run_flow_thread(flow: Any, flow_run: FlowRun, api_url: str | None) -> Any:
    """One flow run, start to final state, in this thread; returns the final state."""
    import prefect.settings as ps
    from prefect.flow_engine import run_flow

    updates = {
        # The worker's API, which a new thread would not see if it came from a context.
        ps.PREFECT_API_URL: api_url,
        # Prefect's flow-run heartbeat thread sleeps in 1 s steps and is joined at the end of
        # every run (half a second per job on average). The lost-run automation does not use
        # it: runs send their own alive events (flows/alive.py).
        ps.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
    }
    with ps.temporary_settings(updates=updates):
        return run_flow(flow, flow_run=flow_run, return_type="state")


# --- the model, once per process ---------------------------------------------------------------


def warm_up(settings: Settings, logger: Any = log) -> None:
    """Load the backbone into the engine's cache with the settings every run uses, by running
    one small job; on a GPU at the default size, so cuDNN has chosen its algorithms for the
    scales of a default job before the first real one."""
    from PIL import Image

    import engine
    from engine.device import pick_device

    defaults = engine.StyleParams()
    # A GPU: every scale of a default job (cuDNN autotunes per shape). A CPU: the first scale
    # only (a step at 512 px costs seconds here).
    gpu = pick_device(settings.device).type == "cuda"
    size = defaults.size if gpu else defaults.min_size
    params = engine.StyleParams(size=size, iterations=2)
    started = time.monotonic()
    content = Image.new("RGB", (params.size, params.size * 3 // 4), (120, 90, 60))
    style = Image.new("RGB", (params.size, params.size), (30, 60, 200))
    result = engine.stylize(
        content,
        [style],
        params,
        device=settings.device,
        backbone=settings.backbone,
        weights=settings.weights,
        cpu_bf16=settings.cpu_bf16,
    )
    logger.info(
        "warm: backbone %s on %s in %.1f s",
        result.backbone,
        result.device,
        time.monotonic() - started,
    )
    print(
        f"styledrop worker: backbone {result.backbone} loaded on {result.device} "
        f"({time.monotonic() - started:.1f} s)",
        flush=True,
    )


def gpu_usable(settings: Settings) -> bool:
    """True unless this process's GPU no longer works (CPU: always True)."""
    import torch

    from engine.device import pick_device

    device = pick_device(settings.device)
    if device.type != "cuda":
        return True
    try:
        (torch.ones(8, device=device) * 2).sum().item()
        torch.cuda.synchronize(device)
    except Exception:  # noqa: BLE001 - a sticky CUDA error: this context is done
        log.exception("GPU check failed")
        return False
    return True


# --- the process ---------------------------------------------------------------------------------


def serve_worker(pool: str, name: str, limit: int, grace: float) -> int:
    """Run one warm worker in this process until it is stopped; returns the exit code."""

    async def main() -> int:  # the worker is made on the loop (it holds anyio events)
        return await StyledropWorker(pool, name=name, limit=limit).serve(grace)

    return asyncio.run(main())
