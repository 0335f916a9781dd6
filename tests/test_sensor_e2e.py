"""Inbox sensors end to end: a slow writer, a backlog with a corrupt file, and the S3 inbox,
against the real stack in sensor_stack.py (the 20-file burst: test_sensor_e2e_burst.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote_plus

import httpx
import pytest
from conftest import free_port, make_image, wait_until
from sensor_stack import BUCKET, OUTCOME_S, PREFIX, S3, TINY, files, inbox_runs, png_size

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


# --- folder inbox ----------------------------------------------------------------------------


def test_a_slowly_written_file_is_taken_only_when_complete(watch, tmp_path: Path) -> None:
    watch().start()
    data = make_image(tmp_path / "src.png", size=(48, 40), seed=5).read_bytes()
    target = tmp_path / "inbox" / "waves" / "slow.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    step = len(data) // 4 + 1
    with open(target, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(0.8)  # the writer's pace: longer than settle_s (0.5)
            assert target.exists(), "taken while still being written"
            assert not (tmp_path / "processing" / "waves" / "slow.png").exists()
    wait_until((tmp_path / "archive" / "waves" / "slow.png").exists, OUTCOME_S, "slow.png archived")
    assert (tmp_path / "archive" / "waves" / "slow.png").read_bytes() == data  # whole file
    assert png_size((tmp_path / "outputs" / "waves" / "slow.png").read_bytes())[0] == TINY["size"]
    assert len(inbox_runs(str(tmp_path / "processing"))) == 1


def test_backlog_after_a_restart_with_a_corrupt_file_beside_good_ones(
    watch, tmp_path: Path
) -> None:
    """Files dropped while the sensor was down are taken when it starts again; a corrupt one
    among them ends in failed/ with the flow's checks' reason (the sensor runs them before it
    submits, so it gets no run) while the good ones beside it succeed. (One test for both:
    the runs overlap, which keeps this module's time down.)"""
    sensor = watch().start()
    sensor.stop()
    inbox = tmp_path / "inbox"
    make_image(inbox / "first.png", seed=11)  # top level: the default style
    (inbox / "waves").mkdir()
    (inbox / "waves" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    make_image(inbox / "waves" / "good.png", seed=21)
    make_image(inbox / "waves" / "blend.png", seed=22)
    (inbox / "waves" / "blend.json").write_text(
        json.dumps({"styles": ["waves", "mosaic"], "blend": [0.7, 0.3], "seed": 3})
    )
    assert not (tmp_path / "processing").exists() or not files(tmp_path / "processing")
    sensor.start()

    note = tmp_path / "failed" / "waves" / "broken.jpg.error.txt"
    wait_until(note.exists, OUTCOME_S, "the corrupt file's error note")
    text = note.read_text()
    assert "broken.jpg" in text and "Flow run: none" in text
    reason = text.split("Reason:", 1)[1].split("\n", 1)[0].strip()
    assert reason and "image" in reason.lower(), text  # the flow's words, not a stack trace
    # The file as it was dropped, what is wrong with it and what to do; no Prefect wording.
    assert str(inbox / "waves" / "broken.jpg") in reason and "processing" not in reason, text
    assert "encountered an exception" not in reason and "JobRejected" not in reason, text
    assert "Use a complete PNG, JPEG or WebP image" in reason, text
    assert (tmp_path / "failed" / "waves" / "broken.jpg").exists()
    for name in ("first.png", "waves/good.png", "waves/blend.png"):
        wait_until((tmp_path / "archive" / name).exists, OUTCOME_S, f"{name} archived")
        assert png_size((tmp_path / "outputs" / name).read_bytes())[0] == TINY["size"]
    assert (tmp_path / "archive" / "waves" / "blend.json").exists()  # the sidecar went along

    processing = str(tmp_path / "processing") + "/"
    runs = {r.parameters["content"].removeprefix(processing): r for r in inbox_runs(processing)}
    assert sorted(runs) == sorted(("first.png", "waves/good.png", "waves/blend.png"))  # one each
    assert runs["first.png"].parameters["styles"] == ["mosaic"]
    assert runs["waves/good.png"].parameters["styles"] == ["waves"]
    # Named after the photo and its styles, and tagged with the source only.
    assert runs["waves/blend.png"].name == "blend.png · waves + mosaic"
    # The same tags on every file's run (the source, and the deployment's own): none per file.
    assert len({tuple(sorted(r.tags)) for r in runs.values()}) == 1
    assert "inbox" in runs["first.png"].tags
    blend = runs["waves/blend.png"].parameters
    assert blend["styles"] == ["waves", "mosaic"]
    assert blend["options"] == {**TINY, "style_blend": [0.7, 0.3], "seed": 3}


# --- S3 inbox --------------------------------------------------------------------------------


def test_s3_inbox_end_to_end_with_notifications_and_listing(watch, s3: S3, tmp_path: Path) -> None:
    from flows import storage

    fs, _ = storage.filesystem(f"s3://{BUCKET}", s3.settings)
    root = f"{BUCKET}/{PREFIX}"
    port = free_port()
    sensor = watch(
        "--s3",
        STYLEDROP_S3_BUCKET=BUCKET,
        STYLEDROP_S3_PREFIX=PREFIX,
        STYLEDROP_S3_WEBHOOK_PORT=str(port),
        STYLEDROP_SENSOR_RESCAN_S="1",
    )
    sensor.start()
    hook = f"http://127.0.0.1:{port}/"

    def notify(key: str) -> int:
        record = {
            "eventName": "ObjectCreated:Put",
            "s3": {
                "bucket": {"name": BUCKET},
                "object": {"key": quote_plus(key), "size": 1, "eTag": "x"},
            },
        }
        r = httpx.post(hook, json={"Records": [record]}, timeout=5)
        r.raise_for_status()
        return r.json()["accepted"]

    def image(seed: int) -> bytes:
        return make_image(tmp_path / f"src{seed}.png", seed=seed).read_bytes()

    # Notified and also listed (rescan every second): must make one run, not two.
    fs.pipe_file(f"{root}inbox/waves/my photo.png", image(31))
    assert notify(f"{PREFIX}inbox/waves/my photo.png") == 1
    fs.pipe_file(f"{root}inbox/listed.png", image(32))
    fs.pipe_file(f"{root}inbox/bad.jpg", b"not an image at all")
    # Ignored by the convention or not ours: accepted as 0.
    assert notify("elsewhere/inbox/x.png") == 0

    wait_until(
        lambda: fs.exists(f"{root}archive/waves/my photo.png"), OUTCOME_S, "notified archived"
    )
    wait_until(lambda: fs.exists(f"{root}archive/listed.png"), OUTCOME_S, "listed archived")
    wait_until(lambda: fs.exists(f"{root}failed/bad.jpg.error.txt"), OUTCOME_S, "bad failed")
    assert png_size(fs.cat_file(f"{root}outputs/waves/my photo.png"))[0] == TINY["size"]
    assert png_size(fs.cat_file(f"{root}outputs/listed.png"))[0] == TINY["size"]
    assert "bad.jpg" in fs.cat_file(f"{root}failed/bad.jpg.error.txt").decode()
    assert fs.exists(f"{root}failed/bad.jpg")

    # A late duplicate notification for a file already done: nothing left in inbox/ to take.
    assert notify(f"{PREFIX}inbox/waves/my photo.png") == 1
    # A later file is a barrier: once it is done, the duplicate was handled before it. Its
    # sidecar is broken, so it fails in the sensor at once, without a run to wait for.
    fs.pipe_file(f"{root}inbox/after.json", b"{broken")
    fs.pipe_file(f"{root}inbox/after.png", image(33))
    assert notify(f"{PREFIX}inbox/after.png") == 1
    wait_until(lambda: fs.exists(f"{root}failed/after.png.error.txt"), OUTCOME_S, "barrier")

    runs = inbox_runs(f"s3://{BUCKET}/{PREFIX}processing/")
    contents = sorted(r.parameters["content"] for r in runs)
    assert contents == sorted(
        f"s3://{BUCKET}/{PREFIX}processing/{k}" for k in ("waves/my photo.png", "listed.png")
    )  # one run each: the notified + listed object too; none for bad.jpg (refused at once)
    assert all("s3" in r.tags and "inbox" not in r.tags for r in runs)  # the source's tag
    # The sensor moves a file's bookkeeping (.run.json) out of processing/ last, after the
    # error note, so that an interrupted finish resumes: wait for it rather than race it.
    wait_until(
        lambda: not [k for k in fs.find(f"{root}processing") if not k.endswith("/")],
        OUTCOME_S,
        "processing/ to be empty",
    )
    assert not [k for k in fs.find(f"{root}inbox") if not k.endswith("/")]


def test_s3_inbox_through_an_sqs_queue(watch, s3: S3, tmp_path: Path) -> None:
    """`watch --s3` configured by the environment as inbox/README.md says for AWS: a bucket
    notifying a queue, the listing effectively off. A boto3 upload becomes one real run."""
    import boto3

    from flows import storage

    aws = dict(
        endpoint_url=s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sqs, s3api = boto3.client("sqs", **aws), boto3.client("s3", **aws)
    queue = sqs.create_queue(QueueName="styledrop-e2e-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    prefix = "queued/"
    s3api.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn["Attributes"]["QueueArn"],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
            ]
        },
    )
    watch(
        "--s3",
        STYLEDROP_S3_BUCKET=BUCKET,
        STYLEDROP_S3_PREFIX=prefix,
        STYLEDROP_S3_QUEUE_URL=queue,
        STYLEDROP_S3_QUEUE_ENDPOINT_URL=s3.endpoint,
        STYLEDROP_S3_QUEUE_RESCAN_S="3600",
        STYLEDROP_S3_WEBHOOK_PORT="0",
    ).start()
    data = make_image(tmp_path / "q.png", seed=41).read_bytes()
    s3api.put_object(Bucket=BUCKET, Key=f"{prefix}inbox/waves/queued photo.png", Body=data)

    fs, _ = storage.filesystem(f"s3://{BUCKET}", s3.settings)
    root = f"{BUCKET}/{prefix}"
    # Taken from the queue, not by a listing (the next one is an hour away).
    wait_until(lambda: not fs.exists(f"{root}inbox/waves/queued photo.png"), 60, "the upload taken")
    wait_until(
        lambda: fs.exists(f"{root}archive/waves/queued photo.png"), OUTCOME_S, "queued archived"
    )
    assert png_size(fs.cat_file(f"{root}outputs/waves/queued photo.png"))[0] == TINY["size"]
    runs = inbox_runs(f"s3://{BUCKET}/{prefix}processing/")
    assert [r.parameters["content"] for r in runs] == [
        f"s3://{BUCKET}/{prefix}processing/waves/queued photo.png"
    ]
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (
        attrs["ApproximateNumberOfMessages"]
        == attrs["ApproximateNumberOfMessagesNotVisible"]
        == "0"
    )
