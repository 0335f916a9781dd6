"""`styledrop watch` (folder inbox) and `styledrop watch --s3` (S3 inbox): turn dropped files
into runs of the `stylize/stylize` deployment until stopped (Ctrl-C or SIGTERM).

It talks to the Prefect API in PREFECT_API_URL (or the active Prefect profile); with neither,
to the local stack's server (``flows.prefect_api``), never to a temporary one: runs created on
a server that vanishes with this process would be lost.
"""

from __future__ import annotations

import argparse
import logging
import threading

from flows import stack


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
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("styledrop").setLevel(args.log_level)
    # Every Prefect API call is an httpx request logged at INFO: noise at the sensor's pace.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from flows.prefect_api import connected
    from flows.sensors.service import start_folder_sensor, start_s3_sensor
    from flows.settings import get_settings

    settings = get_settings()
    stop = threading.Event()
    stack.Signals(lambda *_: stop.set())

    with connected(settings) as api:
        logging.getLogger("styledrop.sensor").info("Prefect API %s", api)
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
