"""The S3 event parser on the bodies the stores document: AWS's event message structure
(docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html), the test
event S3 sends when a notification is set up, SNS's notification envelope (HTTP/SQS JSON
format, and raw message delivery), EventBridge's "Object Created" (.../ev-events.html), and
MinIO's webhook body (docs/bucket/notifications in MinIO's repository)."""

from __future__ import annotations

import json

import pytest

from flows.sensors.s3_events import NotAnS3Event, ObjectEvent, parse

AWS_PUT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-west-2",
            "eventTime": "1970-01-01T00:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "testConfigRule",
                "bucket": {
                    "name": "amzn-s3-demo-bucket",
                    "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                    "arn": "arn:aws:s3:::amzn-s3-demo-bucket",
                },
                "object": {
                    # "red flower.jpg" in a folder, as the docs say keys arrive: form-encoded
                    "key": "inbox%2Fwaves%2Fred+flower%2B1.jpg",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        }
    ]
}

TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2014-10-13T15:57:02.089Z",
    "Bucket": "amzn-s3-demo-bucket",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}


def sns(message: dict) -> dict:
    """SNS's notification envelope (as delivered to SQS without raw message delivery)."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(message),
        "Timestamp": "2012-05-02T00:54:06.655Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEw6JRN...",
        "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0",
    }


EVENTBRIDGE_CREATED = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::amzn-s3-demo-bucket1"],
    "detail": {
        "version": "0",
        "bucket": {"name": "amzn-s3-demo-bucket1"},
        "object": {
            "key": "example-key",
            "size": 5,
            "etag": "b1946ac92492d2347c6235b4d2611184",
            "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
            "sequencer": "617f08299329d189",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "PutObject",
    },
}

MINIO_PUT = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "images/inbox/my photo.jpg",
    "Records": [
        {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2019-10-22T09:27:27Z",
            "eventName": "s3:ObjectCreated:Put",
            "userIdentity": {"principalId": "AKIAIOSFODNN7EXAMPLE"},
            "requestParameters": {
                "region": "",
                "sourceIPAddress": "172.16.118.255",
                "accessKey": "AKIAIOSFODNN7EXAMPLE",
            },
            "responseElements": {
                "x-amz-request-id": "15CFEDF8D4736ED9",
                "x-minio-origin-endpoint": "http://172.17.0.2:9000",
                "x-minio-deployment-id": "0170a4cc-dca6-4e72-86f1-c0cc760dff7f",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": {
                    "name": "images",
                    "ownerIdentity": {"principalId": "AKIAIOSFODNN7EXAMPLE"},
                    "arn": "arn:aws:s3:::images",
                },
                "object": {
                    "key": "inbox%2Fmy+photo.jpg",
                    "size": 224662,
                    "eTag": "5fc7298143efe1276d39a3466d4e255f-1",
                    "contentType": "image/jpeg",
                    "userMetadata": {"content-type": "image/jpeg"},
                    "sequencer": "15CFEDF8D5304D1A",
                },
            },
            "source": {"host": "172.16.118.255", "port": "", "userAgent": "MinIO (linux)"},
        }
    ],
}

PUT = ObjectEvent("amzn-s3-demo-bucket", "inbox/waves/red flower+1.jpg", created=True)


def test_aws_records_with_form_encoded_keys() -> None:
    assert parse(AWS_PUT) == [PUT]
    assert parse(json.dumps(AWS_PUT)) == [PUT]  # a queue message's body
    assert parse(json.dumps(AWS_PUT).encode()) == [PUT]  # a webhook's body


def test_sns_envelope_and_raw_delivery() -> None:
    assert parse(json.dumps(sns(AWS_PUT))) == [PUT]
    assert parse(json.dumps(AWS_PUT)) == [PUT]  # raw message delivery: the event itself
    assert parse(sns(TEST_EVENT)) == []


def test_eventbridge_object_created_and_other_s3_events() -> None:
    assert parse(EVENTBRIDGE_CREATED) == [
        ObjectEvent("amzn-s3-demo-bucket1", "example-key", created=True)
    ]
    deleted = {**EVENTBRIDGE_CREATED, "detail-type": "Object Deleted"}
    assert parse(deleted) == [ObjectEvent("amzn-s3-demo-bucket1", "example-key", created=False)]
    broken = {**EVENTBRIDGE_CREATED, "detail": {"bucket": {"name": "b"}}}
    with pytest.raises(NotAnS3Event, match="without bucket/key"):
        parse(broken)


def test_minio_webhook_body() -> None:
    assert parse(MINIO_PUT) == [ObjectEvent("images", "inbox/my photo.jpg", created=True)]
    removed = json.loads(json.dumps(MINIO_PUT).replace("ObjectCreated:Put", "ObjectRemoved:Delete"))
    assert [e.created for e in parse(removed)] == [False]


def test_the_test_event_is_no_object_event() -> None:
    assert parse(TEST_EVENT) == []


def test_deletions_and_multipart_uploads_keep_their_kind() -> None:
    record = AWS_PUT["Records"][0]
    events = parse(
        {
            "Records": [
                {**record, "eventName": "ObjectCreated:CompleteMultipartUpload"},
                {**record, "eventName": "ObjectCreated:Copy"},
                {**record, "eventName": "ObjectRemoved:Delete"},
                {"eventName": "ObjectCreated:Put"},  # no s3 part: skipped, not an error
            ]
        }
    )
    assert [e.created for e in events] == [True, True, False]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "a JSON list"),
        (b'{"hello": "world"}', "no Records"),
        (b'{"Records": "nope"}', "not a list"),
        (b'{"Type": "SubscriptionConfirmation", "SubscribeURL": "x"}', "subscription"),
        (json.dumps(sns({"hello": 1})).encode(), "no Records"),
        (b'{"Type": "Notification", "Message": {"Records": []}}', "not a string"),
        (b'{"source": "aws.ec2", "detail-type": "EC2 Instance State-change"}', "no Records"),
    ],
)
def test_anything_else_is_refused_with_a_short_reason(body: bytes, reason: str) -> None:
    with pytest.raises(NotAnS3Event, match=reason) as info:
        parse(body)
    assert isinstance(info.value, ValueError) and len(str(info.value)) < 120
