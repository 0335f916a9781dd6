"""S3 events from an SQS queue: how AWS delivers them (S3 -> SQS, S3 -> SNS -> SQS,
S3 -> EventBridge -> SQS; the body forms are ``s3_events``'s job).

One thread long-polls the queue and hands each message to ``handle`` (the S3 inbox's
``handle_notification``, which only notes keys). A message is deleted once handed over; one
that cannot be read stays on the queue, comes back after its visibility timeout and ends in
the queue's dead-letter queue (its redrive policy), never blocking the messages behind it.
Failures to reach the queue back off; they never touch the listing, which goes on regardless.
A message handed over twice (redelivered, or the same object through two routes) is harmless:
the second sighting finds nothing left in inbox/.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("styledrop.sensor")

# https://sqs.<region>.amazonaws.com[.cn]/<account>/<name>, or the legacy
# https://<region>.queue.amazonaws.com/<account>/<name>
_REGION = re.compile(r"^(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?$")


def region_of(queue_url: str) -> str | None:
    """The AWS region named in an SQS queue URL, or None (then: the standard AWS chain)."""
    host = re.sub(r"^[a-z]+://", "", queue_url).split("/", 1)[0].split(":", 1)[0].lower()
    found = _REGION.match(host)
    return (found.group(1) or found.group(2)) if found else None


def sqs_client(
    queue_url: str, endpoint_url: str = "", key: str = "", secret: str = "", wait_s: int = 20
) -> Any:
    """A botocore SQS client for ``queue_url``. Empty key/secret: the standard AWS chain."""
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    session = botocore.session.get_session()
    try:
        return session.create_client(
            "sqs",
            region_name=region_of(queue_url),  # None: the session's (AWS_DEFAULT_REGION...)
            endpoint_url=endpoint_url or None,
            aws_access_key_id=key or None,
            aws_secret_access_key=secret or None,
            # A long poll holds the connection for wait_s: read past it.
            config=Config(read_timeout=wait_s + 10, retries={"max_attempts": 2}),
        )
    except NoRegionError:
        raise ValueError(
            f"no AWS region for the queue {queue_url}: set AWS_DEFAULT_REGION"
        ) from None


class SqsSource:
    """Reads ``queue_url`` in a thread of its own until stopped (``start``/``stop``)."""

    def __init__(
        self,
        queue_url: str,
        handle: Callable[[str], int],
        client: Any,
        wait_s: int = 20,
        backoff_max_s: float = 60.0,
    ) -> None:
        self.queue_url = queue_url
        self.handle = handle
        self.client = client
        self.wait_s = wait_s
        self.backoff_max_s = backoff_max_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="styledrop-sqs", daemon=True)
        self._thread.start()
        log.info("reading S3 events from %s", self.queue_url)

    def stop(self) -> None:
        """Stop after the read in progress. Not waited for: a long poll may hold it for
        wait_s, and a message it brings back and does not delete simply comes back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.read_once()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - unreachable, throttled...: again later
                failures += 1
                delay = min(self.backoff_max_s, 2.0 ** (failures - 1))
                log.warning("reading the queue failed (%s); again in %.0f s", exc, delay)
                self._stop.wait(delay)

    def read_once(self) -> int:
        """Receive up to 10 messages (waiting up to wait_s), hand them over, delete those
        handed over; returns how many were deleted."""
        reply = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        if self._stop.is_set():  # stopped meanwhile: the sensor no longer takes; they come back
            return 0
        done = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(reply.get("Messages", []))
            if self._hand_over(m)
        ]
        if done:
            failed = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=done)
            for entry in failed.get("Failed", []):  # it comes back; handing over is idempotent
                log.warning("could not delete a queue message: %s", entry.get("Message"))
            return len(done) - len(failed.get("Failed", []))
        return 0

    def _hand_over(self, message: dict[str, Any]) -> bool:
        try:
            self.handle(message.get("Body", ""))
            return True
        except Exception as exc:  # noqa: BLE001 - a bad message must not stop the others
            received = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
            log.warning(
                "left queue message %s (received %s times) for the redrive policy: %s",
                message.get("MessageId", "?"),
                received,
                exc,
            )
            return False
