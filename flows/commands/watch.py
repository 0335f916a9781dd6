"""`styledrop watch` (folder inbox) and `styledrop watch --s3` (S3 inbox): turn dropped files
into runs of the `stylize/stylize` deployment until stopped (Ctrl-C or SIGTERM).

It talks to the Prefect API in PREFECT_API_URL (or the active Prefect profile); with neither,
to the local stack's server (http://<host>:<prefect_port>/api), never to a temporary one: runs
created on a server that vanishes with this process would be lost.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--s3",
        action="store_true",
        help="watch s3://<s3_bucket>/<s3_prefix>inbox/ (S3 events from the SQS queue "
        "s3_queue_url and the webhook, and a listing) instead of <data_dir>/inbox/",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def run(args: argparse.Namespace) -> int:
    # Before Prefect is imported: no telemetry from a long-running process.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("styledrop").setLevel(args.log_level)
    # Every Prefect API call is an httpx request logged at INFO: noise at the sensor's pace.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from flows.sensors.service import start_folder_sensor, start_s3_sensor
    from flows.settings import get_settings

    settings = get_settings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    with _prefect_api(f"{settings.prefect_ui_url}/api"):
        refused = _refusal()
        if refused:
            logging.getLogger("styledrop.sensor").error("cannot start: %s", refused)
            return 2
        try:
            running = start_s3_sensor(settings) if args.s3 else start_folder_sensor(settings)
        except (ValueError, OSError) as exc:
            logging.getLogger("styledrop.sensor").error("cannot start: %s", exc)
            return 2
        try:
            stop.wait()
        finally:
            running.stop()
            _flush_events()
    return 0


@contextlib.contextmanager
def _prefect_api(fallback: str) -> Iterator[None]:
    """Use the configured Prefect API, or ``fallback`` when none is configured."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield
        return
    logging.getLogger("styledrop.sensor").info("PREFECT_API_URL not set; using %s", fallback)
    with temporary_settings(updates={PREFECT_API_URL: fallback}):
        yield


def _refusal() -> str | None:
    """The sentence to stop with when the API refuses our credentials. An unreachable API is
    no reason to stop: the sensor keeps files waiting until it answers."""
    from prefect import get_client

    from flows.api_auth import refusal

    try:
        with get_client(sync_client=True) as client:
            client.api_version()  # behind the API's auth, unlike /health
    except Exception as exc:  # noqa: BLE001 - only a refusal matters here
        return refusal(exc)
    return None


def _flush_events() -> None:
    """Send the events still queued (the last files' outcomes) before the process ends."""
    try:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)
    except Exception:  # noqa: BLE001 - best effort at exit
        pass
