"""S3 event messages, whatever carried them: the one parser for the webhook and the queue.

Understood: S3's own ``{"Records": [...]}`` (as S3 sends it to SQS, or SNS with raw message
delivery, and as MinIO posts it to a webhook: ``EventName``/``Key`` beside ``Records`` with
``eventSource: "minio:s3"``), the SNS envelope (``"Type": "Notification"``, the event as a
JSON string in ``Message``), EventBridge's ``"source": "aws.s3"`` events (``detail-type``
``"Object Created"``), and ``s3:TestEvent``, which S3 sends when a notification is set up.
Object keys arrive URL form-encoded (``my+photo.jpg`` is ``my photo.jpg``); they are decoded
here. Anything else raises ``NotAnS3Event`` with a short reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

log = logging.getLogger("styledrop.sensor")


@dataclass(frozen=True)
class ObjectEvent:
    bucket: str
    key: str  # decoded: the object's real key
    created: bool  # an object was written (put, post, copy, multipart upload, ...)


class NotAnS3Event(ValueError):
    """The message is not an S3 event this parser knows; the text says why, in a few words."""


def parse(message: bytes | str | dict[str, Any]) -> list[ObjectEvent]:
    """The object events in ``message`` (an empty list for a test event). Records that name
    no bucket or key are skipped with a warning; a message that is no S3 event at all raises
    ``NotAnS3Event``."""
    if isinstance(message, bytes | str):
        try:
            message = json.loads(message)
        except ValueError:
            raise NotAnS3Event("not JSON") from None
    if not isinstance(message, dict):
        raise NotAnS3Event(f"a JSON {type(message).__name__}, not an object")
    if message.get("Type") == "Notification" and "Message" in message:  # SNS envelope
        inner = message["Message"]
        if not isinstance(inner, str):
            raise NotAnS3Event("an SNS notification whose Message is not a string")
        return parse(inner)
    if "Records" in message:
        records = message["Records"]
        if not isinstance(records, list):
            raise NotAnS3Event("'Records' is not a list")
        return [e for e in map(_record, records) if e is not None]
    if message.get("Event") == "s3:TestEvent":
        return []
    if message.get("source") == "aws.s3" and "detail-type" in message:  # EventBridge
        return _eventbridge(message)
    if message.get("Type") == "SubscriptionConfirmation":
        raise NotAnS3Event("an SNS subscription confirmation: confirm it (SubscribeURL)")
    keys = ", ".join(sorted(map(str, message))[:5])
    raise NotAnS3Event(f"no Records, SNS envelope or EventBridge event (keys: {keys})")


def _record(record: Any) -> ObjectEvent | None:
    try:
        s3 = record["s3"]
        bucket = str(s3["bucket"]["name"])
        key = unquote_plus(str(s3["object"]["key"]))
        name = str(record.get("eventName", ""))
    except (AttributeError, KeyError, TypeError):
        log.warning("ignored an event record without bucket/key: %.200r", record)
        return None
    # AWS: "ObjectCreated:Put"; MinIO: "s3:ObjectCreated:Put".
    return ObjectEvent(bucket, key, name.removeprefix("s3:").startswith("ObjectCreated:"))


def _eventbridge(message: dict[str, Any]) -> list[ObjectEvent]:
    try:
        detail = message["detail"]
        bucket = str(detail["bucket"]["name"])
        key = unquote_plus(str(detail["object"]["key"]))
    except (AttributeError, KeyError, TypeError):
        if message.get("detail-type") == "Object Created":
            raise NotAnS3Event("an EventBridge 'Object Created' without bucket/key") from None
        return []  # other S3 events (bucket-level ones) name no object
    return [ObjectEvent(bucket, key, message["detail-type"] == "Object Created")]
