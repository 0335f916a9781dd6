"""The life of one dropped file, the same for the folder and the S3 inbox:

    inbox/<rel> --take--> processing/<rel> (+ <rel>.run.json) --submit--> a stylize flow run
        COMPLETED            -> archive/<rel>, result at outputs/<rel as .png>
        FAILED / CANCELLED   -> failed/<rel> + <rel>.error.txt (the reason in plain words)
        CRASHED / vanished   -> resubmitted, at most ``crash_retries`` times, then failed/

One worker thread does all of it (moves, hashing, HTTP to Prefect and S3); other threads (the
watchdog observer, the webhook) only note what they saw in their source, which the worker
polls, or call ``offer``; neither ever blocks on I/O. Every decision is
written to the bookkeeping file before it is acted on, so a sensor killed at any point picks
up where it stopped (``recover``), and nothing is ever deleted: names that are taken get a
``-1``, ``-2``... suffix.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import posixpath
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flows.deployment import FINAL_STATES
from flows.naming import run_name
from flows.sensors.convention import SidecarError, is_job, job_spec, output_of, sidecar_of
from flows.sensors.records import RECORD_SUFFIX, JobRecord, now_iso
from flows.sensors.store import ARCHIVE, FAILED, INBOX, OUTPUTS, PROCESSING, InboxStore
from flows.sensors.submit import PrefectGateway, RunInfo, SubmitError
from flows.storage import exists as url_exists

log = logging.getLogger("styledrop.sensor")

ERROR_SUFFIX = ".error.txt"
# How Prefect words a flow that raised: "Flow run encountered an exception: mod.Error: why".
PREFECT_PREFIX = re.compile(r"^Flow run encountered an exception:\s*(?:[\w.]+:\s*)?")


class Source(Protocol):
    """Something that finds files to take besides ``offer`` (settled local files, an S3
    listing). Polled by the worker thread every tick, so it may do I/O."""

    def poll(self, now: float) -> Iterable[str]: ...


@dataclass
class SensorConfig:
    default_style: str = "mosaic"
    options: dict[str, Any] = field(default_factory=dict)  # defaults under every sidecar
    poll_s: float = 2.0  # seconds between reads of the tracked runs' states
    crash_retries: int = 3  # resubmissions of a crashed/vanished run before failed/
    retry_max_s: float = 60.0  # cap of the backoff while Prefect is unreachable
    tick_s: float = 0.2  # longest the worker sleeps when nothing arrives


class InboxSensor:
    def __init__(
        self,
        store: InboxStore,
        gateway: PrefectGateway,
        config: SensorConfig,
        sources: Iterable[Source] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.config = config
        self.sources = list(sources)
        self.clock = clock
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._jobs: dict[str, JobRecord] = {}  # in flight, by name under processing/
        self._next_poll = 0.0
        # While Prefect is unreachable every submission waits (one backoff for all: each
        # failed attempt costs seconds of this thread, so one probe per round, not one per file).
        self._submit_after = 0.0
        self._submit_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- threads --------------------------------------------------------------------------
    def offer(self, inbox_rel: str) -> None:
        """A file under inbox/ may be ready. Safe from any thread; never blocks."""
        self._queue.put(inbox_rel)

    def start(self) -> None:
        # Run in a copy of the caller's context, so Prefect settings entered there (e.g.
        # `temporary_settings` with the API URL) hold in the worker thread too.
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(
            target=ctx.run, args=(self._run,), name="styledrop-sensor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the step in progress and return. Files in flight stay in processing/ with
        their bookkeeping; the next start picks them up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.recover()
        except Exception:  # noqa: BLE001 - a broken recovery must not stop new files
            log.exception("recovering processing/ failed; continuing with new files")
        while not self._stop.is_set():
            try:
                self.step(wait=self.config.tick_s)
            except Exception:  # noqa: BLE001 - the sensor must outlive any one bad file
                log.exception("sensor step failed; continuing")
                self._stop.wait(1.0)

    def step(self, wait: float = 0.0) -> None:
        """One round: take what arrived, submit what is due, read run states when due."""
        offered: list[str] = []
        try:
            offered.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
            while True:
                offered.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        now = self.clock()
        for source in self.sources:
            try:
                offered.extend(source.poll(now))
            except Exception:  # noqa: BLE001 - e.g. S3 unreachable: list again next time
                log.warning("finding new files failed; will look again", exc_info=True)
        for rel in dict.fromkeys(offered):  # one take per name per round
            self._guard(rel, lambda rel=rel: self.take(rel))
        for rec in list(self._jobs.values()):
            if self.clock() < self._submit_after:
                break
            if rec.flow_run_id is None and rec.parameters is not None:
                self._guard(rec.inbox_rel, lambda rec=rec: self.submit(rec))
        if self._jobs and self.clock() >= self._next_poll:
            self._next_poll = self.clock() + self.config.poll_s
            for rec in list(self._jobs.values()):
                if rec.parameters is None:  # preparing it failed (storage hiccup): again
                    self._guard(rec.inbox_rel, lambda rec=rec: self.prepare(rec))
            self.poll()

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:  # noqa: BLE001 - one file's trouble must not stop the others
            log.exception("handling %s failed; it stays where it is and is retried", what)

    # --- taking ---------------------------------------------------------------------------
    def take(self, inbox_rel: str) -> JobRecord | None:
        """Move a dropped file (and its sidecar) to processing/ and prepare its job. None when
        it is not a job or is already gone (taken by an earlier offer, or by another sensor)."""
        if not is_job(inbox_rel) or not self.store.exists(INBOX, inbox_rel):
            return None
        src_sidecar = sidecar_of(inbox_rel)
        has_sidecar = self.store.exists(INBOX, src_sidecar)
        rel = self.store.free_name(
            PROCESSING,
            inbox_rel,
            companions=lambda r: (r + RECORD_SUFFIX, *((sidecar_of(r),) if has_sidecar else ())),
            reserved=set(self._jobs),
        )
        try:
            self.store.move(INBOX, inbox_rel, PROCESSING, rel)
        except FileNotFoundError:
            return None
        record = JobRecord(inbox_rel=inbox_rel, rel=rel, take_id=uuid.uuid4().hex)
        if has_sidecar:
            record.sidecar = self._take_sidecar(inbox_rel, src_sidecar, sidecar_of(rel))
        record.note("taken", inbox=inbox_rel, sidecar=record.sidecar)
        self._save(record)
        log.info("took %s%s", inbox_rel, f" (as {rel})" if rel != inbox_rel else "")
        self.prepare(record)
        return record

    def _take_sidecar(self, inbox_rel: str, src: str, dst: str) -> str | None:
        # Two images with one stem (photo.jpg, photo.png) share photo.json: copy it for all
        # but the last of them, so each job keeps the settings it was dropped with.
        folder = src.rsplit("/", 1)[0] if "/" in src else ""
        shared = any(
            other != inbox_rel and is_job(other) and sidecar_of(other) == src
            for other in self._siblings(folder)
        )
        try:
            if shared:
                self.store.copy(INBOX, src, PROCESSING, dst)
            else:
                self.store.move(INBOX, src, PROCESSING, dst)
        except FileNotFoundError:
            return None
        return dst

    def _siblings(self, folder: str) -> list[str]:
        prefix = f"{folder}/" if folder else ""
        return [prefix + name for name in self.store.names(INBOX, folder)]

    def prepare(self, record: JobRecord) -> None:
        """Hash the file, read the sidecar and decide the flow's parameters; a bad sidecar
        fails the file at once, with the reason, without a run."""
        self._jobs[record.rel] = record  # from here on a failed step is retried, not forgotten
        try:
            record.content_sha256 = self.store.sha256(PROCESSING, record.rel)
            side = self.store.read_bytes(PROCESSING, record.sidecar) if record.sidecar else None
        except FileNotFoundError:
            self.finish(record, "failed", "the file disappeared from processing/ before it ran")
            return
        side_sha = hashlib.sha256(side or b"").hexdigest()
        # Same photo + same place + same sidecar = the same job; the same photo under two
        # styles (two places) is two jobs. The root tells two inboxes apart.
        ident = f"{self.store.root}|{record.inbox_rel}|{record.content_sha256}|{side_sha}"
        record.key = "styledrop-inbox:" + hashlib.sha256(ident.encode()).hexdigest()[:32]
        try:
            spec = job_spec(
                record.inbox_rel,
                side,
                default_style=self.config.default_style,
                defaults=self.config.options,
            )
        except SidecarError as exc:
            name = posixpath.basename(sidecar_of(record.inbox_rel))
            record.error = f"the sidecar {name} cannot be used: {exc}"
            self.finish(record, "failed", record.error)
            return
        # Results of jobs in flight are not written yet: their names are taken all the same.
        out_root = self.store.url(OUTPUTS) + "/"
        busy = {
            str(r.parameters["output"]).removeprefix(out_root)
            for r in self._jobs.values()
            if r.parameters
        }
        out_rel = self.store.free_name(
            OUTPUTS, output_of(record.inbox_rel), lambda r: (r + ".json",), reserved=busy
        )
        record.parameters = {
            "content": self.store.url(PROCESSING, record.rel),
            "styles": spec.styles,
            "options": spec.options,
            "output": self.store.url(OUTPUTS, out_rel),
            "force": spec.force,
            "content_name": self.store.url(INBOX, record.inbox_rel),
        }
        self._save(record)

    # --- submitting -----------------------------------------------------------------------
    def submit(self, rec: JobRecord) -> None:
        assert rec.parameters is not None
        try:
            while True:
                run = self.gateway.submit(
                    rec.parameters,
                    key=rec.idempotency_key(),
                    # One tag per source, never one per file.
                    tags=["s3" if self.store.is_s3 else "inbox"],
                    name=run_name(rec.parameters),
                    take=rec.take_id,
                )
                if run.take == rec.take_id or self._reusable(run):
                    break
                # The key found a finished run of an earlier drop of this very file (same
                # place, same sidecar) whose result is not there to reuse: the user dropped
                # it again to have it done again, so make a new key.
                rec.note("earlier drop's run found, not reusable", flow_run_id=run.id)
                rec.generation += 1
                self._save(rec)
        except SubmitError as exc:
            if not exc.retryable:
                self.finish(rec, "failed", f"the flow run could not be created: {exc}")
                return
            self._submit_failures += 1
            delay = min(self.config.retry_max_s, 2.0 ** (self._submit_failures - 1))
            self._submit_after = self.clock() + delay
            log.warning("submitting %s failed (%s); retry in %.0f s", rec.inbox_rel, exc, delay)
            return
        self._submit_failures = 0
        rec.flow_run_id, rec.flow_run_name = run.id, run.name
        if run.take != rec.take_id:
            # Adopted an earlier drop's run: its result is where that run writes it.
            rec.parameters["output"] = run.parameters.get("output", rec.parameters["output"])
        rec.note("submitted", flow_run_id=run.id, key=rec.idempotency_key())
        self._save(rec)
        log.info("submitted %s as flow run %s (%s)", rec.inbox_rel, run.name, run.id)
        event = "styledrop.inbox.resubmitted" if rec.attempts else "styledrop.inbox.received"
        self._emit(event, rec, run)

    def _reusable(self, run: RunInfo) -> bool:
        """An earlier drop's run that still runs (this drop shares it), or completed with its
        result still in place."""
        if run.state_type not in FINAL_STATES:
            return True
        output = run.parameters.get("output")
        return run.state_type == "COMPLETED" and bool(output) and self._exists(output)

    def _exists(self, url: str) -> bool:
        return url_exists(url, self.store.settings)

    # --- tracking -------------------------------------------------------------------------
    def poll(self) -> None:
        """Read the states of all submitted runs (one request per 200) and act on final ones."""
        tracked = [r for r in self._jobs.values() if r.flow_run_id]
        if not tracked:
            return
        try:
            runs = self.gateway.read_runs([r.flow_run_id for r in tracked])  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - unreachable: ask again next poll
            log.warning("reading flow run states failed (%r); will ask again", exc)
            return
        for rec in tracked:
            run = runs.get(rec.flow_run_id or "")
            self._guard(rec.inbox_rel, lambda rec=rec, run=run: self._judge(rec, run))

    def _judge(self, rec: JobRecord, run: RunInfo | None) -> None:
        if run is None:
            self._died(rec, None, f"flow run {rec.flow_run_id} no longer exists on the server")
        elif run.state_type == "COMPLETED":
            output = rec.parameters["output"] if rec.parameters else ""
            if output and self._exists(output):
                self.finish(rec, "archived", None, run)
            else:
                reason = f"the run completed but wrote no result at {output}"
                self.finish(rec, "failed", reason, run)
        elif run.state_type == "FAILED":
            self.finish(rec, "failed", self._plain(rec, run.message), run)
        elif run.state_type == "CANCELLED":
            self.finish(rec, "failed", f"the run was cancelled. {run.message}".strip(), run)
        elif run.state_type == "CRASHED":
            self._died(rec, run, f"the run crashed: {run.message or 'no message'}")

    def _plain(self, rec: JobRecord, message: str | None) -> str:
        """A failed run's message as the user can read it: without Prefect's "Flow run
        encountered an exception: <type>:" and naming the file where it was dropped."""
        if not message:
            return "the run failed without a message"
        message = PREFECT_PREFIX.sub("", message)
        return message.replace(
            self.store.url(PROCESSING, rec.rel), self.store.url(INBOX, rec.inbox_rel)
        )

    def _died(self, rec: JobRecord, run: RunInfo | None, why: str) -> None:
        if rec.attempts >= self.config.crash_retries:
            reason = f"{why} (gave up after {rec.attempts} resubmission(s))"
            self.finish(rec, "failed", reason, run)
            return
        rec.attempts += 1
        rec.note("resubmitting", why=why, flow_run_id=rec.flow_run_id)
        log.warning(
            "%s: %s; resubmitting (%d/%d)",
            rec.inbox_rel,
            why,
            rec.attempts,
            self.config.crash_retries,
        )
        rec.flow_run_id = rec.flow_run_name = None
        self._save(rec)

    # --- finishing ------------------------------------------------------------------------
    def finish(
        self, rec: JobRecord, outcome: str, reason: str | None, run: RunInfo | None = None
    ) -> None:
        """Move the file, its sidecar and its bookkeeping to archive/ or failed/ (with the
        error note). Resumable: the decision is saved first, the bookkeeping moves last."""
        area = ARCHIVE if outcome == "archived" else FAILED
        if rec.outcome is None or rec.destination is None:

            def companions(r: str) -> tuple[str, ...]:
                side = (sidecar_of(r),) if rec.sidecar else ()
                return (r + RECORD_SUFFIX, r + ERROR_SUFFIX, *side)

            rec.outcome, rec.reason = outcome, reason
            rec.destination = self.store.free_name(area, rec.inbox_rel, companions)
            rec.note(
                outcome, reason=reason, destination=rec.destination, flow_run_id=rec.flow_run_id
            )
            self._save(rec)
        dest = rec.destination
        if self.store.exists(PROCESSING, rec.rel):
            self.store.move(PROCESSING, rec.rel, area, dest)
        if rec.sidecar and self.store.exists(PROCESSING, rec.sidecar):
            self.store.move(PROCESSING, rec.sidecar, area, sidecar_of(dest))
        if outcome == "failed":
            self.store.write_bytes(area, dest + ERROR_SUFFIX, self._error_text(rec, run).encode())
        if self.store.exists(PROCESSING, rec.record_rel):
            self.store.move(PROCESSING, rec.record_rel, area, dest + RECORD_SUFFIX)
        self._jobs.pop(rec.rel, None)
        if outcome == "archived":
            log.info(
                "done %s -> archive/%s (result %s)",
                rec.inbox_rel,
                dest,
                (rec.parameters or {}).get("output"),
            )
        else:
            log.warning("failed %s -> failed/%s: %s", rec.inbox_rel, dest, reason)
        self._emit(f"styledrop.inbox.{outcome}", rec, run, reason=reason)

    def _error_text(self, rec: JobRecord, run: RunInfo | None) -> str:
        lines = [
            "styledrop could not stylise this file.",
            "",
            f"Reason:   {rec.reason}",
            f"File:     {rec.inbox_rel} (as dropped into inbox/)",
        ]
        if rec.flow_run_id:
            lines.append(f"Flow run: {rec.flow_run_name or '(unnamed)'} ({rec.flow_run_id})")
            url = self.gateway.run_url(rec.flow_run_id)
            if url:
                lines.append(f"          {url}")
        else:
            lines.append("Flow run: none (refused before a run was started)")
        if run is not None:
            lines.append(f"State:    {run.state_name} at {run.state_time}")
        if rec.attempts:
            lines.append(f"Resubmitted {rec.attempts} time(s) after crashes.")
        lines += [
            f"Time:     {now_iso()}",
            "",
            "To try again, fix the cause and drop the file into inbox/ again",
            "(the history of this attempt is in the .run.json file beside it).",
        ]
        return "\n".join(lines) + "\n"

    # --- recovery -------------------------------------------------------------------------
    def recover(self) -> None:
        """Pick up what a previous sensor left in processing/: unfinished moves are finished,
        unsubmitted jobs submitted, submitted runs tracked again (the first poll decides:
        running runs are waited for, crashed or vanished ones resubmitted)."""
        files = self.store.list(PROCESSING)
        claimed: set[str] = set()
        for name in files:
            if not name.endswith(RECORD_SUFFIX):
                continue
            try:
                rec = JobRecord.from_json(self.store.read_bytes(PROCESSING, name))
            except (ValueError, TypeError) as exc:
                log.error("unreadable bookkeeping processing/%s (%s); left alone", name, exc)
                continue
            rec.rel = name[: -len(RECORD_SUFFIX)]
            claimed.update({rec.rel, rec.sidecar or ""})
            self._guard(rec.inbox_rel, lambda rec=rec: self._resume(rec))
        for name in files:
            if name in claimed or not is_job(name):
                continue
            # Moved here but the sensor stopped before writing the bookkeeping.
            rec = JobRecord(inbox_rel=name, rel=name, take_id=uuid.uuid4().hex)
            side = sidecar_of(name)
            if side in files and side not in claimed:
                rec.sidecar = side
                claimed.add(side)
            rec.note("found in processing/ without bookkeeping")
            self._save(rec)
            self._guard(name, lambda rec=rec: self.prepare(rec))
        self._next_poll = 0.0
        if self._jobs:
            log.info("recovered %d file(s) from processing/", len(self._jobs))

    def _resume(self, rec: JobRecord) -> None:
        if rec.outcome:
            self.finish(rec, rec.outcome, rec.reason)
        elif not self.store.exists(PROCESSING, rec.rel):
            self.finish(rec, "failed", "the file disappeared from processing/ before it finished")
        elif rec.parameters is None:
            self.prepare(rec)
        else:
            self._jobs[rec.rel] = rec

    # --- helpers --------------------------------------------------------------------------
    def _save(self, rec: JobRecord) -> None:
        self.store.write_bytes(PROCESSING, rec.record_rel, rec.to_json())

    def _emit(
        self, event: str, rec: JobRecord, run: RunInfo | None, reason: str | None = None
    ) -> None:
        payload: dict[str, Any] = {
            "path": rec.inbox_rel,
            "content_sha256": rec.content_sha256,
            "styles": (rec.parameters or {}).get("styles"),
            "output": (rec.parameters or {}).get("output"),
            "attempts": rec.attempts,
        }
        if reason:
            payload["reason"] = reason
        self.gateway.emit(
            event,
            content_sha256=rec.content_sha256 or "0" * 16,
            inbox_rel=rec.inbox_rel,
            root=self.store.root,
            run=run or (_stub(rec) if rec.flow_run_id else None),
            payload=payload,
        )


def _stub(rec: JobRecord) -> RunInfo:
    """Enough of a run to relate an event to it when its full state is not at hand."""
    return RunInfo(
        id=rec.flow_run_id or "",
        name=rec.flow_run_name or "",
        state_type="",
        state_name="",
        message="",
    )
