"""The S3 inbox's parts: notification parsing, the webhook, moves on a real S3 HTTP API
(moto's server on loopback, through s3fs), and the sensor's life cycle on a bucket against a
real Prefect server with an unserved stand-in deployment (see test_sensor_prefect.py; the
real flow on S3 is in test_sensor_e2e.py)."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import quote_plus
from uuid import UUID

import httpx
import pytest
from conftest import free_port, make_image, wait_until
from pydantic import SecretStr

from flows import storage
from flows.sensors.s3 import S3Inbox, s3_root
from flows.sensors.service import start_s3_sensor
from flows.sensors.store import INBOX, PROCESSING, InboxStore
from flows.sensors.submit import PrefectGateway
from flows.sensors.take import Take
from flows.sensors.webhook import NotificationServer
from flows.settings import Settings

BUCKET = "styledrop-sensor"


@pytest.fixture(scope="module")
def s3_settings(s3_endpoint: str) -> Settings:
    settings = Settings(
        s3_endpoint_url=s3_endpoint, s3_key="testing", s3_secret="testing", s3_bucket=BUCKET
    )
    fs, _ = storage.filesystem(f"s3://{BUCKET}", settings)
    fs.makedirs(BUCKET, exist_ok=True)
    return settings


def record(event: str, key: str, bucket: str = BUCKET) -> dict:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": event,
        "s3": {
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key, safe="/"), "size": 10, "eTag": "abc"},
        },
    }


def source(prefix: str, settings: Settings) -> S3Inbox:
    store = InboxStore(s3_root(BUCKET, prefix), settings)
    return S3Inbox(store, BUCKET, prefix, settle_s=0.0, list_s=3600)


def test_notifications_name_new_inbox_objects_only(s3_settings: Settings) -> None:
    src = source("team/", s3_settings)
    payload = {
        "Records": [
            record("ObjectCreated:Put", "team/inbox/waves/my photo+1.jpg"),  # "+" and space
            record("s3:ObjectCreated:CompleteMultipartUpload", "team/inbox/big.png"),  # MinIO
            record("ObjectCreated:Copy", "team/inbox/photo.json"),  # a sidecar: not a job
            record("ObjectCreated:Put", "team/inbox/.hidden.png"),
            record("ObjectRemoved:Delete", "team/inbox/gone.png"),
            record("ObjectCreated:Put", "team/outputs/x.png"),  # not the inbox
            record("ObjectCreated:Put", "other/inbox/x.png"),  # another prefix
            record("ObjectCreated:Put", "team/inbox/x.png", bucket="someone-else"),
            {"eventName": "ObjectCreated:Put"},  # malformed: ignored, not an error
        ]
    }
    assert src.handle_notification(payload) == 2
    # settle_s=0: both are ready on the first poll after they were first timed.
    src.poll(0.0)
    assert sorted(src.poll(1.0)) == ["big.png", "waves/my photo+1.jpg"]
    assert src.handle_notification(b'{"Event": "s3:TestEvent"}') == 0
    with pytest.raises(ValueError):
        src.handle_notification(b"not json")


def test_webhook_accepts_posts_and_refuses_garbage(s3_settings: Settings) -> None:
    src = source("", s3_settings)
    server = NotificationServer("127.0.0.1", 0, src.handle_notification)
    server.start()
    try:
        body = {"Records": [record("ObjectCreated:Put", "inbox/a.png")]}
        r = httpx.post(server.url, json=body, timeout=5)
        assert (r.status_code, r.json()) == (200, {"accepted": 1})
        r = httpx.post(server.url, content=b"{oops", timeout=5)
        assert r.status_code == 400 and "not an S3 notification" in r.json()["error"]
        assert httpx.get(server.url, timeout=5).status_code == 200
    finally:
        server.stop()


def test_webhook_token_is_required_when_set(s3_settings: Settings, caplog) -> None:
    """MinIO sends MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN as `Authorization: Bearer <token>`; its
    HEAD probe of the endpoint carries none and must still be answered."""
    settings = s3_settings.model_copy(update={"s3_webhook_token": SecretStr("s3cr3t-t0ken")})
    assert "s3cr3t-t0ken" not in repr(settings)
    src = source("", settings)
    server = NotificationServer("127.0.0.1", 0, src.handle_notification, settings.s3_webhook_token)
    server.start()
    body = {"Records": [record("ObjectCreated:Put", "inbox/t.png")]}
    try:
        with caplog.at_level("DEBUG", logger="styledrop"):
            for auth in (None, "Bearer wrong", "s3cr3t-t0ken", "Bearer s3cr3t-t0ken2"):
                headers = {"Authorization": auth} if auth else {}
                r = httpx.post(server.url, json=body, headers=headers, timeout=5)
                assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
            ok = {"Authorization": "Bearer s3cr3t-t0ken"}
            r = httpx.post(server.url, json=body, headers=ok, timeout=5)
            assert (r.status_code, r.json()) == (200, {"accepted": 1})
            assert httpx.head(server.url, timeout=5).status_code == 200
        assert "s3cr3t-t0ken" not in caplog.text
        src.poll(0.0)
        assert src.poll(1.0) == ["t.png"]  # only the authorised post was noted
    finally:
        server.stop()


def test_webhook_without_a_token_stays_on_loopback_and_refuses_bad_lengths(
    s3_settings: Settings,
) -> None:
    src = source("", s3_settings)
    for host in ("0.0.0.0", "192.168.1.20", "::", "webhook.example"):
        with pytest.raises(ValueError, match="STYLEDROP_S3_WEBHOOK_TOKEN"):
            NotificationServer(host, 0, src.handle_notification)
    server = NotificationServer("127.0.0.1", 0, src.handle_notification)
    server.start()
    host, port = server.httpd.server_address[:2]
    try:
        for length in ("-1", "abc", "1e3"):
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.putrequest("POST", "/")
            conn.putheader("Content-Length", length)
            conn.endheaders()
            assert conn.getresponse().status == 400, length
            conn.close()
    finally:
        server.stop()


def test_s3_moves_copy_then_delete_and_refuse_a_missing_source(s3_settings: Settings) -> None:
    store = InboxStore(s3_root(BUCKET, "moves"), s3_settings)
    store.write_bytes(INBOX, "waves/a b.png", b"png bytes")
    store.fs.pipe_file(f"{BUCKET}/moves/inbox/folder/", b"")  # a console's "folder" marker
    assert store.list(INBOX) == ["waves/a b.png"]
    store.move(INBOX, "waves/a b.png", PROCESSING, "waves/a b.png")
    assert store.read_bytes(PROCESSING, "waves/a b.png") == b"png bytes"
    assert not store.exists(INBOX, "waves/a b.png")
    assert store.url(PROCESSING, "waves/a b.png") == f"s3://{BUCKET}/moves/processing/waves/a b.png"
    with pytest.raises(FileNotFoundError):  # the second of two sightings: already taken
        store.move(INBOX, "waves/a b.png", PROCESSING, "waves/a b-1.png")
    assert store.free_name(PROCESSING, "waves/a b.png") == "waves/a b-1.png"


def test_s3_life_cycle_one_run_for_a_notified_and_listed_object(
    s3_settings: Settings, prefect_api, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.states import Completed, Failed

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("sensor-s3")
        client.create_deployment(flow_id=flow_id, name="inbox")
    settings = s3_settings.model_copy(
        update=dict(
            s3_prefix="life/",
            settle_s=0.3,
            sensor_poll_s=0.3,
            sensor_rescan_s=0.5,
            sensor_options={"size": 40},
            s3_webhook_port=free_port(),
        )
    )
    fs, _ = storage.filesystem(f"s3://{BUCKET}", settings)
    root = f"{BUCKET}/life"
    fs.pipe_file(f"{root}/inbox/waves/good.png", make_image(tmp_path / "g.png").read_bytes())
    fs.pipe_file(f"{root}/inbox/bad.png", make_image(tmp_path / "b.png", seed=2).read_bytes())
    fs.pipe_file(f"{root}/inbox/junk.png", b"junk")  # refused by the sensor's checks
    running = start_s3_sensor(settings, PrefectGateway(deployment="sensor-s3/inbox"))
    try:
        hook = running.webhook.url
        body = {"Records": [record("ObjectCreated:Put", "life/inbox/waves/good.png")]}
        assert httpx.post(hook, json=body, timeout=5).json() == {"accepted": 1}

        def submitted(rel: str) -> Take | None:
            try:
                take = Take.from_json(fs.cat_file(f"{root}/processing/{rel}.run.json"))
            except FileNotFoundError:
                return None
            return take if take.flow_run_id else None

        good = wait_until(lambda: submitted("waves/good.png"), 30, "good.png submitted")
        bad = wait_until(lambda: submitted("bad.png"), 30, "bad.png submitted")
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(good.flow_run_id))
            assert run.parameters["content"] == f"s3://{root}/processing/waves/good.png"
            assert run.parameters["output"] == f"s3://{root}/outputs/waves/good.png"
            # The stand-in for the flow: write the result where it was asked, then finish.
            fs.pipe_file(run.parameters["output"].removeprefix("s3://"), b"result")
            client.set_flow_run_state(UUID(good.flow_run_id), Completed(), force=True)
            client.set_flow_run_state(
                UUID(bad.flow_run_id), Failed(message="the GPU ran out of memory"), force=True
            )
        wait_until(lambda: fs.exists(f"{root}/archive/waves/good.png"), 30, "good archived")
        wait_until(lambda: fs.exists(f"{root}/failed/bad.png.error.txt"), 30, "bad failed")
        assert b"the GPU ran out of memory" in fs.cat_file(f"{root}/failed/bad.png.error.txt")
        # The junk never became a run: the sensor's checks refused it with the flow's words.
        note = fs.cat_file(f"{root}/failed/junk.png.error.txt").decode()
        assert "junk.png cannot be used" in note and "Flow run: none" in note
        assert fs.cat_file(f"{root}/failed/junk.png") == b"junk"
        # Notified once, listed every 0.5 s: still exactly one run for the object.
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["sensor-s3"])), limit=200
            )
        contents = [r.parameters.get("content") for r in runs]
        assert contents.count(f"s3://{root}/processing/waves/good.png") == 1
        assert f"s3://{root}/processing/junk.png" not in contents
        assert not [k for k in fs.find(f"{root}/processing") if not k.endswith("/")]
    finally:
        running.stop()
