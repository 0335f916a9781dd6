"""Assemble and start a sensor from the settings: the folder inbox or the S3 inbox (+ its
event queue and notification webhook). Used by ``styledrop watch`` (and ``up``) and by the
tests."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from flows.sensors.folder import FolderInbox
from flows.sensors.lifecycle import SensorConfig
from flows.sensors.s3 import S3Inbox, s3_root
from flows.sensors.sensor import InboxSensor
from flows.sensors.sqs import SqsSource, sqs_client
from flows.sensors.store import InboxStore
from flows.sensors.submit import PrefectGateway
from flows.sensors.webhook import NotificationServer
from flows.settings import Settings
from flows.storage import s3_options

log = logging.getLogger("styledrop.sensor")


@dataclass
class RunningSensor:
    sensor: InboxSensor
    store: InboxStore
    folder: FolderInbox | None = None
    s3: S3Inbox | None = None
    webhook: NotificationServer | None = None
    sqs: SqsSource | None = None
    _stoppers: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop taking files (watchers first), then let the worker finish its step."""
        for stop in reversed(self._stoppers):
            try:
                stop()
            except Exception:  # noqa: BLE001 - stop the rest regardless
                log.exception("stopping %r failed", stop)
        self._stoppers.clear()


def sensor_config(settings: Settings) -> SensorConfig:
    return SensorConfig(
        default_style=settings.default_style,
        options=dict(settings.sensor_options),
        poll_s=settings.sensor_poll_s,
        crash_retries=settings.sensor_crash_retries,
        retry_max_s=settings.sensor_retry_max_s,
    )


def start_folder_sensor(settings: Settings, gateway: PrefectGateway | None = None) -> RunningSensor:
    """Watch ``<data_dir>/inbox/``; results to ``<data_dir>/outputs/``."""
    store = InboxStore(str(settings.data_dir), settings)
    folder = FolderInbox(settings.data_dir / "inbox", settings.settle_s, settings.sensor_rescan_s)
    sensor = InboxSensor(store, gateway or PrefectGateway(), sensor_config(settings), [folder])
    running = RunningSensor(sensor, store, folder=folder)
    folder.start()  # watch (and list the backlog) first: nothing dropped meanwhile is missed
    running._stoppers.append(folder.stop)
    sensor.start()
    running._stoppers.append(sensor.stop)
    log.info("watching %s", folder.inbox)
    return running


def start_s3_sensor(
    settings: Settings, gateway: PrefectGateway | None = None, webhook: bool = True
) -> RunningSensor:
    """Watch ``s3://<s3_bucket>/<s3_prefix>inbox/`` by listing and by S3 events: from the
    queue at ``settings.s3_queue_url`` when set (AWS), and posted to the webhook when
    ``settings.s3_webhook_port`` is not 0 (MinIO). With a queue the listing runs every
    ``s3_queue_rescan_s`` only: it just catches lost events then."""
    if not settings.s3_bucket:
        raise ValueError("set STYLEDROP_S3_BUCKET (and the s3_* settings) to watch an S3 inbox")
    store = InboxStore(s3_root(settings.s3_bucket, settings.s3_prefix), settings)
    list_s = settings.s3_queue_rescan_s if settings.s3_queue_url else settings.sensor_rescan_s
    source = S3Inbox(store, settings.s3_bucket, settings.s3_prefix, settings.settle_s, list_s)
    queue = None
    if settings.s3_queue_url:  # before anything starts: a bad setting stops nothing
        options = s3_options(settings)
        client = sqs_client(
            settings.s3_queue_url,
            settings.s3_queue_endpoint_url,
            options.get("key", ""),
            options.get("secret", ""),
            settings.s3_queue_wait_s,
        )
        queue = SqsSource(
            settings.s3_queue_url, source.handle_notification, client, settings.s3_queue_wait_s
        )
    sensor = InboxSensor(store, gateway or PrefectGateway(), sensor_config(settings), [source])
    running = RunningSensor(sensor, store, s3=source, sqs=queue)
    sensor.start()
    running._stoppers.append(sensor.stop)
    if queue is not None:
        queue.start()
        running._stoppers.append(queue.stop)
    if webhook and settings.s3_webhook_port:
        server = NotificationServer(
            settings.host,
            settings.s3_webhook_port,
            source.handle_notification,
            token=settings.s3_webhook_token,
        )
        server.start()
        running.webhook = server
        running._stoppers.append(server.stop)
    log.info("watching %s/inbox/", store.root)
    return running
