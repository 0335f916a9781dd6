"""flows.storage: atomic writes on a local folder and on S3 (moto's real S3 HTTP API on
loopback), browser URLs, and which errors count as worth a retry."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import pytest

import engine.images
from flows import storage
from flows.settings import Settings
from flows.storage import Storage


def test_local_write_creates_folders_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = Storage(str(tmp_path / "root"), Settings())
    store.write_bytes("_jobs/abc/result.png", b"one")
    store.write_bytes("_jobs/abc/result.png", b"two")

    assert (tmp_path / "root/_jobs/abc/result.png").read_bytes() == b"two"
    assert os.listdir(tmp_path / "root/_jobs/abc") == ["result.png"]


def test_local_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    payloads = [b"a" * 4_000_000, b"b" * 4_000_000]
    storage.write_bytes(str(target), payloads[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def read_loop() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            seen.add(data[:1] + str(len(data)).encode())

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(30):
            storage.write_bytes(str(target), payloads[i % 2])
    finally:
        stop.set()
        reader.join()
    assert seen <= {b"a4000000", b"b4000000"}, f"a reader saw a partial file: {seen}"


def test_failed_local_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "record.json"
    storage.write_bytes(str(target), b"old")

    # Simulates the disk failing at the last moment (the rename) - cannot be provoked for real.
    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(engine.images.os, "replace", broken_replace)  # the one atomic writer
    with pytest.raises(OSError):
        storage.write_bytes(str(target), b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["record.json"]


def test_json_round_trip_and_missing_is_none(tmp_path: Path) -> None:
    store = Storage(str(tmp_path), Settings())
    assert store.read_json("_runs/nope.json") is None
    store.write_json("_runs/x.json", {"job_id": "j", "n": 1})
    assert store.read_json("_runs/x.json") == {"job_id": "j", "n": 1}


def test_local_public_url_points_at_the_file_route(tmp_path: Path) -> None:
    settings = Settings(host="files.example", dashboard_port=8501, data_dir=tmp_path)
    store = Storage(str(tmp_path), settings)
    url = store.public_url("_jobs/a b/preview.jpg")
    assert url.startswith("http://files.example:8501/files/_jobs/a%20b/preview.jpg?exp=")
    assert store.relative(str(tmp_path / "x/y.png")) == "x/y.png"
    assert store.relative("/elsewhere/y.png") is None
    with pytest.raises(ValueError):
        store.public_url("../etc/passwd")


def test_infrastructure_faults_are_retried_but_missing_files_are_not() -> None:
    from botocore.exceptions import EndpointConnectionError

    assert storage.is_infrastructure_fault(ConnectionRefusedError())
    assert storage.is_infrastructure_fault(TimeoutError())
    assert storage.is_infrastructure_fault(EndpointConnectionError(endpoint_url="http://x"))
    assert not storage.is_infrastructure_fault(FileNotFoundError("gone"))
    assert not storage.is_infrastructure_fault(PermissionError("no"))
    assert not storage.is_infrastructure_fault(ValueError("bad image"))


def test_an_overloaded_or_unreachable_prefect_api_is_retried_but_a_client_error_is_not() -> None:
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1:4200/api/v2/concurrency_limits/increment")

    def status(code: int) -> httpx.HTTPStatusError:
        response = httpx.Response(code, request=request)
        return httpx.HTTPStatusError(str(code), request=request, response=response)

    # SQLite's "database is locked" under a burst reaches the client as a 503.
    assert storage.is_infrastructure_fault(status(503))
    assert storage.is_infrastructure_fault(httpx.ConnectError("refused", request=request))
    assert not storage.is_infrastructure_fault(status(404))
    assert not storage.is_infrastructure_fault(status(422))


# --- S3 ------------------------------------------------------------------------------------


def test_s3_write_read_and_json(s3_settings: Settings) -> None:
    store = Storage("s3://styledrop-test/outputs", s3_settings)
    assert not store.exists("_jobs/j/result.png")
    url = store.write_bytes("_jobs/j/result.png", b"\x89PNG...")
    assert url == "s3://styledrop-test/outputs/_jobs/j/result.png"
    assert store.exists("_jobs/j/result.png")
    assert store.read_bytes("_jobs/j/result.png") == b"\x89PNG..."
    assert store.read_json("_jobs/j/record.json") is None
    store.write_json("_jobs/j/record.json", {"status": "running"})
    store.write_json("_jobs/j/record.json", {"status": "completed"})
    assert store.read_json("_jobs/j/record.json") == {"status": "completed"}
    assert store.relative(url) == "_jobs/j/result.png"


def test_s3_public_url_is_a_presigned_url_a_browser_can_open(s3_settings: Settings) -> None:
    store = Storage("s3://styledrop-test/outputs", s3_settings)
    store.write_bytes("_jobs/j/preview.jpg", b"jpeg bytes")
    url = store.public_url("_jobs/j/preview.jpg")
    assert url.startswith(s3_settings.s3_endpoint_url)
    assert "Signature" in url or "X-Amz-Signature" in url
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200 and r.content == b"jpeg bytes"


def test_reading_an_input_from_an_s3_url(s3_settings: Settings) -> None:
    storage.write_bytes("s3://styledrop-test/inbox/photo.jpg", b"photo", s3_settings)
    assert storage.read_bytes("s3://styledrop-test/inbox/photo.jpg", s3_settings) == b"photo"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("s3://styledrop-test/inbox/missing.jpg", s3_settings)
