"""S3 events through SQS, as AWS delivers them: S3 -> SQS, S3 -> SNS -> SQS (enveloped and
raw), S3 -> EventBridge -> SQS, all over HTTP against moto's server (conftest's
`s3_endpoint`: S3, SQS, SNS and EventBridge in one), and the S3 sensor against a real Prefect
server with an unserved stand-in deployment (runs are created, not run; see
test_sensor_prefect.py). The listing runs once at start and then every hour, so only events
can make a file be taken. Tests avoid moto's known differences from AWS (see
shared/ENVIRONMENT.md): nothing here depends on how it encodes keys or how many events it
sends for a multipart upload."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import unserved_deployment, wait_until
from PIL import Image

from flows import storage
from flows.sensors.service import RunningSensor, start_s3_sensor
from flows.sensors.sqs import SqsSource, region_of, sqs_client
from flows.sensors.submit import PrefectGateway
from flows.sensors.take import Take
from flows.settings import Settings

DEPLOYMENT = "sensor-sqs/inbox"
EVENT_S = 60  # an upload is taken within seconds; generous for a loaded 2-core machine


def png() -> bytes:
    """A small real image: the sensor checks that a file decodes before it submits it."""
    out = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 120, 40)).save(out, "PNG")
    return out.getvalue()


PNG = png()


@dataclass
class Aws:
    endpoint: str
    s3: Any
    sqs: Any
    sns: Any
    events: Any


@pytest.fixture(scope="module")
def aws(s3_endpoint: str) -> Aws:
    import boto3

    kw = dict(
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return Aws(s3_endpoint, *(boto3.client(name, **kw) for name in ("s3", "sqs", "sns", "events")))


@pytest.fixture(scope="module")
def deployment(prefect_api) -> str:
    return unserved_deployment(DEPLOYMENT)


def make_queue(aws: Aws, name: str, visibility_s: int = 30, dlq: bool = False) -> tuple[str, str]:
    """A queue (url, arn); with ``dlq`` a dead-letter queue ``<name>-dlq`` after 1 receive."""
    attributes = {"VisibilityTimeout": str(visibility_s)}
    if dlq:
        dead_url, dead_arn = make_queue(aws, f"{name}-dlq")
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dead_arn, "maxReceiveCount": "1"}
        )
    url = aws.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, arn["Attributes"]["QueueArn"]


def wire(aws: Aws, bucket: str, queue_arn: str, routes: list[str]) -> None:
    """Create ``bucket`` and send its inbox/ events to the queue by each route, configured
    as inbox/README.md tells people to."""
    aws.s3.create_bucket(Bucket=bucket)
    inbox = {"Key": {"FilterRules": [{"Name": "prefix", "Value": "inbox/"}]}}
    created = ["s3:ObjectCreated:*"]
    config: dict[str, Any] = {}
    for route in routes:
        if route == "s3-sqs":
            config["QueueConfigurations"] = [
                {"QueueArn": queue_arn, "Events": created, "Filter": inbox}
            ]
        elif route in ("s3-sns-sqs", "s3-sns-raw-sqs"):
            topic = aws.sns.create_topic(Name=f"{bucket}-topic")["TopicArn"]
            raw = {"RawMessageDelivery": "true"} if route == "s3-sns-raw-sqs" else {}
            aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes=raw)
            config["TopicConfigurations"] = [
                {"TopicArn": topic, "Events": created, "Filter": inbox}
            ]
        elif route == "s3-eventbridge-sqs":
            config["EventBridgeConfiguration"] = {}
            pattern = {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": "inbox/"}]}},
            }
            rule = f"{bucket}-created"
            aws.events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
            aws.events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue_arn}])
        else:
            raise AssertionError(route)
    aws.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)


def settings_for(aws: Aws, bucket: str, queue_url: str = "") -> Settings:
    return Settings(
        s3_endpoint_url=aws.endpoint,
        s3_key="testing",
        s3_secret="testing",
        s3_bucket=bucket,
        s3_queue_url=queue_url,
        s3_queue_endpoint_url=aws.endpoint,
        s3_queue_wait_s=2,
        s3_queue_rescan_s=3600,  # the listing effectively off: events only
        sensor_rescan_s=3600,
        settle_s=0.3,
        sensor_poll_s=0.5,
        s3_webhook_port=0,
        sensor_options={"size": 40},
    )


@pytest.fixture
def sensor(deployment: str) -> Iterator[Callable[[Settings], RunningSensor]]:
    started: list[RunningSensor] = []

    def start(settings: Settings) -> RunningSensor:
        running = start_s3_sensor(settings, PrefectGateway(deployment=deployment))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def submitted(settings: Settings, rel: str) -> Take | None:
    fs, _ = storage.filesystem(f"s3://{settings.s3_bucket}", settings)
    try:
        take = Take.from_json(fs.cat_file(f"{settings.s3_bucket}/processing/{rel}.run.json"))
    except FileNotFoundError:
        return None
    return take if take.flow_run_id else None


def runs_of(bucket: str) -> list[str]:
    """The `content` of every run the stand-in deployment got for files of ``bucket``."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[DEPLOYMENT.split("/")[0]])),
            limit=200,
        )
    prefix = f"s3://{bucket}/processing/"
    return sorted(
        str(r.parameters["content"])
        for r in runs
        if r.parameters.get("content", "").startswith(prefix)
    )


BARRIER = "zz-barrier.png"


def barrier(aws: Aws, settings: Settings) -> None:
    """Upload one more object and wait until it is taken: the sensor takes what it was told
    of in order, so anything notified before it (a repeat) has been dealt with by then."""
    aws.s3.put_object(Bucket=settings.s3_bucket, Key=f"inbox/{BARRIER}", Body=PNG)
    wait_until(lambda: submitted(settings, BARRIER), EVENT_S, "the barrier object taken")


def queue_empty(aws: Aws, url: str) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return all(attrs[n] == "0" for n in names)


def upload_multipart(settings: Settings, key: str) -> None:
    """s3fs writes in 5 MiB parts: 11 MiB is a three-part multipart upload (an image, then
    bytes after its end, which image readers ignore)."""
    fs, _ = storage.filesystem(f"s3://{settings.s3_bucket}", settings)
    with fs.open(f"{settings.s3_bucket}/{key}", "wb", block_size=5 * 2**20) as f:
        f.write(PNG + os.urandom(11 * 2**20))


@pytest.mark.parametrize("route", ["s3-sqs", "s3-sns-sqs", "s3-sns-raw-sqs", "s3-eventbridge-sqs"])
def test_each_route_takes_a_put_and_a_multipart_upload_once(aws: Aws, sensor, route: str) -> None:
    bucket = f"sqs-{route}"
    queue_url, queue_arn = make_queue(aws, bucket)
    wire(aws, bucket, queue_arn, [route])
    settings = settings_for(aws, bucket, queue_url)
    sensor(settings)

    t0 = time.monotonic()
    aws.s3.put_object(Bucket=bucket, Key="inbox/waves/put photo.png", Body=PNG)
    upload_multipart(settings, "inbox/big.png")
    head = aws.s3.head_object(Bucket=bucket, Key="inbox/big.png")
    assert "-" in head["ETag"]  # a multipart upload's ETag: "<md5 of md5s>-<parts>"

    wait_until(lambda: submitted(settings, "waves/put photo.png"), EVENT_S, "the put taken")
    wait_until(lambda: submitted(settings, "big.png"), EVENT_S, "the multipart upload taken")
    print(f"{route}: both uploads taken and submitted {time.monotonic() - t0:.1f} s after")
    wait_until(lambda: queue_empty(aws, queue_url), EVENT_S, "the queue's messages deleted")
    barrier(aws, settings)
    assert runs_of(bucket) == [
        f"s3://{bucket}/processing/{n}" for n in ("big.png", "waves/put photo.png", BARRIER)
    ]  # exactly one run each


class Recorder:
    """Stands between the queue reader and the S3 inbox: records the bodies handed over and
    can make the first hand-over of a body naming ``crash_on`` fail after it went through,
    as a sensor killed between handing a message over and deleting it would."""

    def __init__(self, handle: Callable[[str], int], crash_on: str = "") -> None:
        self.handle, self.crash_on = handle, crash_on
        self.bodies: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, body: str) -> int:
        count = self.handle(body)
        with self._lock:
            self.bodies.append(body)
            first = sum(self.crash_on in b for b in self.bodies) == 1
        if self.crash_on and self.crash_on in body and first:
            raise RuntimeError("killed before deleting the message")
        return count

    def naming(self, text: str) -> int:
        with self._lock:
            return sum(text in b for b in self.bodies)


def read_queue(running: RunningSensor, queue_url: str, handle: Recorder) -> SqsSource:
    """A queue reader on ``running``'s S3 inbox through ``handle`` (as the service wires it)."""
    settings = running.store.settings
    client = sqs_client(queue_url, settings.s3_queue_endpoint_url, "testing", "testing", 2)
    source = SqsSource(queue_url, handle, client, wait_s=2)
    source.start()
    running._stoppers.append(source.stop)
    return source


def test_a_message_not_deleted_comes_back_without_a_second_run(aws: Aws, sensor) -> None:
    bucket = "sqs-redelivered"
    queue_url, queue_arn = make_queue(aws, bucket, visibility_s=1)
    wire(aws, bucket, queue_arn, ["s3-sqs"])
    settings = settings_for(aws, bucket)  # no queue of its own: read by the recorder below
    running = sensor(settings)
    recorder = Recorder(running.s3.handle_notification, crash_on="again.png")
    read_queue(running, queue_url, recorder)

    aws.s3.put_object(Bucket=bucket, Key="inbox/again.png", Body=PNG)
    wait_until(lambda: submitted(settings, "again.png"), EVENT_S, "again.png taken")
    wait_until(lambda: recorder.naming("again.png") >= 2, EVENT_S, "the message to come back")
    wait_until(lambda: queue_empty(aws, queue_url), EVENT_S, "the message deleted at last")
    barrier(aws, settings)
    assert runs_of(bucket) == [f"s3://{bucket}/processing/{n}" for n in ("again.png", BARRIER)]


def test_the_same_object_notified_by_two_routes_is_one_run(aws: Aws, sensor) -> None:
    bucket = "sqs-two-routes"
    queue_url, queue_arn = make_queue(aws, bucket)
    wire(aws, bucket, queue_arn, ["s3-sqs", "s3-eventbridge-sqs"])
    running = sensor(settings := settings_for(aws, bucket))
    recorder = Recorder(running.s3.handle_notification)
    read_queue(running, queue_url, recorder)

    aws.s3.put_object(Bucket=bucket, Key="inbox/twice.png", Body=PNG)
    wait_until(lambda: submitted(settings, "twice.png"), EVENT_S, "twice.png taken")
    wait_until(lambda: recorder.naming("twice.png") >= 2, EVENT_S, "both routes' messages")
    wait_until(lambda: queue_empty(aws, queue_url), EVENT_S, "both messages deleted")
    assert {("Records" in b, "Object Created" in b) for b in recorder.bodies if "twice" in b} == {
        (True, False),
        (False, True),
    }  # one S3 event, one EventBridge event
    barrier(aws, settings)
    assert runs_of(bucket) == [f"s3://{bucket}/processing/{n}" for n in ("twice.png", BARRIER)]


def test_garbage_neither_stops_the_sensor_nor_blocks_the_next_message(aws: Aws, sensor) -> None:
    bucket = "sqs-garbage"
    queue_url, queue_arn = make_queue(aws, bucket, visibility_s=1, dlq=True)
    dead_url = aws.sqs.get_queue_url(QueueName=f"{bucket}-dlq")["QueueUrl"]
    wire(aws, bucket, queue_arn, ["s3-sqs"])
    settings = settings_for(aws, bucket, queue_url)
    running = sensor(settings)

    garbage = [
        "not json at all",
        json.dumps({"hello": "world"}),
        json.dumps({"Type": "Notification", "Message": "{broken"}),
    ]
    for body in garbage:
        aws.sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    aws.s3.put_object(Bucket=bucket, Key="inbox/after.png", Body=PNG)

    wait_until(lambda: submitted(settings, "after.png"), EVENT_S, "after.png taken")
    # Left on the queue, they come back and the redrive policy moves them aside.
    dead: list[str] = []

    def all_dead() -> bool:
        got = aws.sqs.receive_message(QueueUrl=dead_url, MaxNumberOfMessages=10)
        for m in got.get("Messages", []):
            dead.append(m["Body"])
            aws.sqs.delete_message(QueueUrl=dead_url, ReceiptHandle=m["ReceiptHandle"])
        return len(dead) >= len(garbage)

    wait_until(all_dead, EVENT_S, "the garbage in the dead-letter queue")
    assert sorted(dead) == sorted(garbage)
    assert running.sqs is not None and running.sqs._thread.is_alive()
    aws.s3.put_object(Bucket=bucket, Key="inbox/later.png", Body=PNG)
    wait_until(lambda: submitted(settings, "later.png"), EVENT_S, "later.png taken")
    assert runs_of(bucket) == [
        f"s3://{bucket}/processing/after.png",
        f"s3://{bucket}/processing/later.png",
    ]


def test_a_queue_failure_backs_off_and_never_stops_the_listing(
    aws: Aws, sensor, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = "sqs-no-queue"
    aws.s3.create_bucket(Bucket=bucket)
    missing = f"{aws.endpoint}/123456789012/no-such-queue"
    settings = settings_for(aws, bucket, missing).model_copy(update={"s3_queue_rescan_s": 0.5})
    with caplog.at_level("WARNING", logger="styledrop.sensor"):
        running = sensor(settings)
        aws.s3.put_object(Bucket=bucket, Key="inbox/listed.png", Body=PNG)
        wait_until(lambda: submitted(settings, "listed.png"), EVENT_S, "listed.png taken")
        wait_until(lambda: caplog.text.count("reading the queue failed") >= 2, EVENT_S, "retries")
    assert "again in 1 s" in caplog.text and "again in 2 s" in caplog.text  # backing off
    assert running.sqs is not None and running.sqs._thread.is_alive()
    assert runs_of(bucket) == [f"s3://{bucket}/processing/listed.png"]


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/inbox", "eu-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/inbox", "cn-north-1"),
        ("https://ap-south-1.queue.amazonaws.com/123456789012/inbox", "ap-south-1"),
        ("http://127.0.0.1:9324/000000000000/inbox", None),  # elsewhere: the AWS chain
    ],
)
def test_the_region_comes_from_the_queue_url(url: str, region: str | None) -> None:
    assert region_of(url) == region
