"""The life of one dropped file, the same for the folder and the S3 inbox:

    inbox/<rel> --take--> processing/<rel> (+ <rel>.run.json) --submit--> a stylize flow run
        COMPLETED            -> archive/<rel>, result at outputs/<rel as .png>
        FAILED / CANCELLED   -> failed/<rel> + <rel>.error.txt (the reason in plain words)
        CRASHED / vanished   -> resubmitted, at most ``crash_retries`` times, then failed/

These are the steps of that life, one file at a time (``Lifecycle``); the loop that calls them
is ``InboxSensor`` (sensor.py) and the words left for people are in notes.py. Every decision is
written to the file's bookkeeping (its ``Take``, take.py) before it is acted on, so a sensor
killed at any point picks up where it stopped (``recover``), and nothing is ever deleted:
names that are taken get a ``-1``, ``-2``... suffix.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.checks import check_job
from flows.deployment import FINAL_STATES, INBOX_EVENT, RunView
from flows.jobs import JobRejected
from flows.naming import run_name
from flows.sensors.convention import (
    ERROR_SUFFIX,
    SidecarError,
    is_job,
    job_spec,
    output_of,
    sidecar_of,
)
from flows.sensors.notes import error_note, failure_reason
from flows.sensors.store import ARCHIVE, FAILED, INBOX, OUTPUTS, PROCESSING, InboxStore
from flows.sensors.submit import TAKE_LABEL, PrefectGateway, SubmitError
from flows.sensors.take import BOOKKEEPING_SUFFIX, Take
from flows.storage import exists as url_exists

log = logging.getLogger("styledrop.sensor")


@dataclass
class SensorConfig:
    default_style: str = "mosaic"
    options: dict[str, Any] = field(default_factory=dict)  # defaults under every sidecar
    poll_s: float = 2.0  # seconds between reads of the tracked runs' states
    crash_retries: int = 3  # resubmissions of a crashed/vanished run before failed/
    retry_max_s: float = 60.0  # cap of the backoff while Prefect is unreachable
    tick_s: float = 0.2  # longest the worker sleeps when nothing arrives


class Lifecycle:
    """The steps of each dropped file's life: take, prepare, submit, judge its run, finish,
    and recover what a stopped sensor left. Called from one thread only (InboxSensor's)."""

    def __init__(self, store: InboxStore, gateway: PrefectGateway, config: SensorConfig) -> None:
        self.store = store
        self.gateway = gateway
        self.config = config
        self._takes: dict[str, Take] = {}  # in flight, by name under processing/

    @property
    def in_flight(self) -> list[Take]:
        return list(self._takes.values())

    # --- taking ---------------------------------------------------------------------------
    def take(self, inbox_rel: str) -> Take | None:
        """Move a dropped file (and its sidecar) to processing/ and prepare its job. None when
        it is not a job or is already gone (taken by an earlier offer, or by another sensor)."""
        if not is_job(inbox_rel) or not self.store.exists(INBOX, inbox_rel):
            return None
        src_sidecar = sidecar_of(inbox_rel)
        has_sidecar = self.store.exists(INBOX, src_sidecar)
        rel = self.store.free_name(
            PROCESSING,
            inbox_rel,
            companions=lambda r: (
                r + BOOKKEEPING_SUFFIX,
                *((sidecar_of(r),) if has_sidecar else ()),
            ),
            reserved=set(self._takes),
        )
        try:
            self.store.move(INBOX, inbox_rel, PROCESSING, rel)
        except FileNotFoundError:
            return None
        take = Take(inbox_rel=inbox_rel, rel=rel, take_id=uuid.uuid4().hex)
        if has_sidecar:
            take.sidecar = self._take_sidecar(inbox_rel, src_sidecar, sidecar_of(rel))
        take.note("taken", inbox=inbox_rel, sidecar=take.sidecar)
        self._save(take)
        log.info("took %s%s", inbox_rel, f" (as {rel})" if rel != inbox_rel else "")
        self.prepare(take)
        return take

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

    def prepare(self, take: Take) -> None:
        """Hash the file, read the sidecar, check the job as the flow will, and decide the flow's
        parameters; a file the flow would refuse (not an image, too small, a bad sidecar or
        option, an unknown style) fails at once, with the reason, without a run."""
        self._takes[take.rel] = take  # from here on a failed step is retried, not forgotten
        try:
            take.content_sha256 = self.store.sha256(PROCESSING, take.rel)
            side = self.store.read_bytes(PROCESSING, take.sidecar) if take.sidecar else None
        except FileNotFoundError:
            self.finish(take, "failed", "the file disappeared from processing/ before it ran")
            return
        side_sha = hashlib.sha256(side or b"").hexdigest()
        # Same photo + same place + same sidecar = the same job; the same photo under two
        # styles (two places) is two jobs. The root tells two inboxes apart.
        ident = f"{self.store.root}|{take.inbox_rel}|{take.content_sha256}|{side_sha}"
        take.key = "styledrop-inbox:" + hashlib.sha256(ident.encode()).hexdigest()[:32]
        try:
            spec = job_spec(
                take.inbox_rel,
                side,
                default_style=self.config.default_style,
                defaults=self.config.options,
            )
        except SidecarError as exc:
            name = posixpath.basename(sidecar_of(take.inbox_rel))
            take.error = f"the sidecar {name} cannot be used: {exc}"
            self.finish(take, "failed", take.error)
            return
        # The flow's own checks, now: a file that would be refused is in failed/ with its
        # reason in seconds, not after waiting its turn in the queue.
        content = self.store.url(PROCESSING, take.rel)
        content_name = self.store.url(INBOX, take.inbox_rel)
        try:
            check_job(content, spec.styles, spec.options, None, content_name, self.store.settings)
        except JobRejected as exc:
            take.error = str(exc)
            self.finish(take, "failed", take.error)
            return
        # Results of jobs in flight are not written yet: their names are taken all the same.
        out_root = self.store.url(OUTPUTS) + "/"
        busy = {
            str(t.parameters["output"]).removeprefix(out_root)
            for t in self._takes.values()
            if t.parameters
        }
        out_rel = self.store.free_name(
            OUTPUTS, output_of(take.inbox_rel), lambda r: (r + ".json",), reserved=busy
        )
        take.parameters = {
            "content": content,
            "styles": spec.styles,
            "options": spec.options,
            "output": self.store.url(OUTPUTS, out_rel),
            "force": spec.force,
            "content_name": content_name,
        }
        self._save(take)

    # --- submitting -----------------------------------------------------------------------
    def submit(self, take: Take) -> bool:
        """Create (or find) the file's flow run: True once it has one, False when Prefect
        refused it (the file is failed). Raises a retryable ``SubmitError`` while Prefect is
        unreachable: the caller backs off and submits again."""
        assert take.parameters is not None
        try:
            while True:
                run = self.gateway.submit(
                    take.parameters,
                    key=take.idempotency_key(),
                    # One tag per source, never one per file.
                    tags=["s3" if self.store.is_s3 else "inbox"],
                    name=run_name(take.parameters),
                    take=take.take_id,
                )
                if run.labels.get(TAKE_LABEL) == take.take_id or self._reusable(run):
                    break
                # The key found a finished run of an earlier drop of this very file (same
                # place, same sidecar) whose result is not there to reuse: the user dropped
                # it again to have it done again, so make a new key.
                take.note("earlier drop's run found, not reusable", flow_run_id=run.id)
                take.generation += 1
                self._save(take)
        except SubmitError as exc:
            if not exc.retryable:
                self.finish(take, "failed", f"the flow run could not be created: {exc}")
                return False
            raise
        take.flow_run_id, take.flow_run_name = run.id, run.name
        if run.labels.get(TAKE_LABEL) != take.take_id:
            # Adopted an earlier drop's run: its result is where that run writes it.
            take.parameters["output"] = run.parameters.get("output", take.parameters["output"])
        take.note("submitted", flow_run_id=run.id, key=take.idempotency_key())
        self._save(take)
        log.info("submitted %s as flow run %s (%s)", take.inbox_rel, run.name, run.id)
        event = INBOX_EVENT + ("resubmitted" if take.attempts else "received")
        self._emit(event, take, run)
        return True

    def _reusable(self, run: RunView) -> bool:
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
        tracked = [t for t in self._takes.values() if t.flow_run_id]
        if not tracked:
            return
        try:
            runs = self.gateway.read_runs([t.flow_run_id for t in tracked])  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - unreachable: ask again next poll
            log.warning("reading flow run states failed (%r); will ask again", exc)
            return
        for take in tracked:
            run = runs.get(take.flow_run_id or "")
            guard(take.inbox_rel, lambda take=take, run=run: self._judge(take, run))

    def _judge(self, take: Take, run: RunView | None) -> None:
        if run is None:
            self._died(take, None, f"flow run {take.flow_run_id} no longer exists on the server")
        elif run.state_type == "COMPLETED":
            output = take.parameters["output"] if take.parameters else ""
            if output and self._exists(output):
                self.finish(take, "archived", None, run)
            else:
                reason = f"the run completed but wrote no result at {output}"
                self.finish(take, "failed", reason, run)
        elif run.state_type == "FAILED":
            self.finish(take, "failed", self._plain(take, run.message), run)
        elif run.state_type == "CANCELLED":
            self.finish(take, "failed", f"the run was cancelled. {run.message}".strip(), run)
        elif run.state_type == "CRASHED":
            self._died(take, run, f"the run crashed: {run.message or 'no message'}")

    def _plain(self, take: Take, message: str | None) -> str:
        return failure_reason(
            message, self.store.url(PROCESSING, take.rel), self.store.url(INBOX, take.inbox_rel)
        )

    def _died(self, take: Take, run: RunView | None, why: str) -> None:
        if take.attempts >= self.config.crash_retries:
            reason = f"{why} (gave up after {take.attempts} resubmission(s))"
            self.finish(take, "failed", reason, run)
            return
        take.attempts += 1
        take.note("resubmitting", why=why, flow_run_id=take.flow_run_id)
        log.warning(
            "%s: %s; resubmitting (%d/%d)",
            take.inbox_rel,
            why,
            take.attempts,
            self.config.crash_retries,
        )
        take.flow_run_id = take.flow_run_name = None
        self._save(take)

    # --- finishing ------------------------------------------------------------------------
    def finish(
        self, take: Take, outcome: str, reason: str | None, run: RunView | None = None
    ) -> None:
        """Move the file, its sidecar and its bookkeeping to archive/ or failed/ (with the
        error note). Resumable: the decision is saved first, the bookkeeping moves last."""
        area = ARCHIVE if outcome == "archived" else FAILED
        if take.outcome is None or take.destination is None:

            def companions(r: str) -> tuple[str, ...]:
                side = (sidecar_of(r),) if take.sidecar else ()
                return (r + BOOKKEEPING_SUFFIX, r + ERROR_SUFFIX, *side)

            take.outcome, take.reason = outcome, reason
            take.destination = self.store.free_name(area, take.inbox_rel, companions)
            take.note(
                outcome, reason=reason, destination=take.destination, flow_run_id=take.flow_run_id
            )
            self._save(take)
        dest = take.destination
        if self.store.exists(PROCESSING, take.rel):
            self.store.move(PROCESSING, take.rel, area, dest)
        if take.sidecar and self.store.exists(PROCESSING, take.sidecar):
            self.store.move(PROCESSING, take.sidecar, area, sidecar_of(dest))
        if outcome == "failed":
            self.store.write_bytes(area, dest + ERROR_SUFFIX, self._error_text(take, run).encode())
        if self.store.exists(PROCESSING, take.bookkeeping_rel):
            self.store.move(PROCESSING, take.bookkeeping_rel, area, dest + BOOKKEEPING_SUFFIX)
        self._takes.pop(take.rel, None)
        if outcome == "archived":
            log.info(
                "done %s -> archive/%s (result %s)",
                take.inbox_rel,
                dest,
                (take.parameters or {}).get("output"),
            )
        else:
            log.warning("failed %s -> failed/%s: %s", take.inbox_rel, dest, reason)
        self._emit(INBOX_EVENT + outcome, take, run, reason=reason)

    def _error_text(self, take: Take, run: RunView | None) -> str:
        url = self.gateway.run_url(take.flow_run_id) if take.flow_run_id else None
        return error_note(take, run, url)

    # --- recovery -------------------------------------------------------------------------
    def recover(self) -> None:
        """Pick up what a previous sensor left in processing/: unfinished moves are finished,
        unsubmitted jobs submitted, submitted runs tracked again (the first poll decides:
        running runs are waited for, crashed or vanished ones resubmitted)."""
        files = self.store.list(PROCESSING)
        claimed: set[str] = set()
        for name in files:
            if not name.endswith(BOOKKEEPING_SUFFIX):
                continue
            try:
                take = Take.from_json(self.store.read_bytes(PROCESSING, name))
            except (ValueError, TypeError) as exc:
                log.error("unreadable bookkeeping processing/%s (%s); left alone", name, exc)
                claimed.add(name[: -len(BOOKKEEPING_SUFFIX)])  # not taken afresh over it
                continue
            take.rel = name[: -len(BOOKKEEPING_SUFFIX)]
            claimed.update({take.rel, take.sidecar or ""})
            guard(take.inbox_rel, lambda take=take: self._resume(take))
        for name in files:
            if name in claimed or not is_job(name):
                continue
            # Moved here but the sensor stopped before writing the bookkeeping.
            take = Take(inbox_rel=name, rel=name, take_id=uuid.uuid4().hex)
            side = sidecar_of(name)
            if side in files and side not in claimed:
                take.sidecar = side
                claimed.add(side)
            take.note("found in processing/ without bookkeeping")
            self._save(take)
            guard(name, lambda take=take: self.prepare(take))
        if self._takes:
            log.info("recovered %d file(s) from processing/", len(self._takes))

    def _resume(self, take: Take) -> None:
        if take.outcome:
            self.finish(take, take.outcome, take.reason)
        elif not self.store.exists(PROCESSING, take.rel):
            self.finish(take, "failed", "the file disappeared from processing/ before it finished")
        elif take.parameters is None:
            self.prepare(take)
        else:
            self._takes[take.rel] = take

    # --- helpers --------------------------------------------------------------------------
    def _save(self, take: Take) -> None:
        self.store.write_bytes(PROCESSING, take.bookkeeping_rel, take.to_json())

    def _emit(self, event: str, take: Take, run: RunView | None, reason: str | None = None) -> None:
        payload: dict[str, Any] = {
            "path": take.inbox_rel,
            "content_sha256": take.content_sha256,
            "styles": (take.parameters or {}).get("styles"),
            "output": (take.parameters or {}).get("output"),
            "attempts": take.attempts,
        }
        if reason:
            payload["reason"] = reason
        self.gateway.emit(
            event,
            content_sha256=take.content_sha256 or "0" * 16,
            inbox_rel=take.inbox_rel,
            root=self.store.root,
            run=run or (_stub(take) if take.flow_run_id else None),
            payload=payload,
        )


def guard(what: str, action: Callable[[], None]) -> None:
    """Run one file's step; its trouble is logged and it is retried, the others go on."""
    try:
        action()
    except Exception:  # noqa: BLE001 - one file's trouble must not stop the others
        log.exception("handling %s failed; it stays where it is and is retried", what)


def _stub(take: Take) -> RunView:
    """Enough of a run to relate an event to it when its full state is not at hand."""
    return RunView(id=take.flow_run_id or "", name=take.flow_run_name or "")
