"""Signed file links (flows/links.py) and the secrets the stack makes for itself."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from flows import links
from flows.settings import Settings
from flows.stack_secrets import stack_secret
from flows.storage import Storage


def test_a_link_is_valid_until_it_expires_and_for_its_path_only() -> None:
    key = b"k" * 32
    query = parse_qs(links.signed_query(key, "_jobs/a/result.png", 100, now=1_000))
    exp, sig = query["exp"][0], query["sig"][0]
    assert exp == "1100"
    assert links.valid(key, "_jobs/a/result.png", exp, sig, now=1_099)
    assert not links.valid(key, "_jobs/a/result.png", exp, sig, now=1_100)  # expired
    assert not links.valid(key, "_jobs/a/record.json", exp, sig, now=1_000)  # other path
    assert not links.valid(b"other", "_jobs/a/result.png", exp, sig, now=1_000)  # other key
    assert not links.valid(key, "_jobs/a/result.png", "1101", sig, now=1_000)  # longer life
    for bad_exp, bad_sig in [(None, sig), (exp, None), ("", sig), ("-5", sig), ("1e9", sig)]:
        assert not links.valid(key, "_jobs/a/result.png", bad_exp, bad_sig, now=1_000)


def test_the_stack_makes_one_secret_once_readable_only_by_its_owner(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    made: list[SecretStr] = []
    threads = [
        threading.Thread(target=lambda: made.append(stack_secret(settings, "link-secret")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({s.get_secret_value() for s in made}) == 1  # everyone got the same
    path = tmp_path / ".styledrop" / "link-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(made[0].get_secret_value()) >= 40
    assert sorted(os.listdir(path.parent)) == ["link-secret"]  # no temporary left behind
    assert stack_secret(Settings(data_dir=tmp_path), "link-secret") == made[0]


def test_a_configured_secret_wins_and_nothing_is_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, link_secret="configured-secret")
    assert links.link_key(settings) == b"configured-secret"
    assert not (tmp_path / ".styledrop").exists()
    assert "configured-secret" not in repr(settings)


def test_the_flow_signs_links_the_dashboard_accepts(tmp_path: Path) -> None:
    """The flow and the dashboard are separate processes; the secret file joins them."""
    flow_side = Storage(str(tmp_path / "outputs"), Settings(data_dir=tmp_path))
    url = urlsplit(flow_side.public_url("_jobs/x y/preview.jpg"))
    assert url.path == "/files/_jobs/x%20y/preview.jpg"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    dashboard_key = links.link_key(Settings(data_dir=tmp_path))
    assert links.valid(dashboard_key, "_jobs/x y/preview.jpg", query["exp"], query["sig"])
    signed_at = int(query["exp"]) - Settings().presign_expiry_s
    assert abs(signed_at - time.time()) < 5  # lives presign_expiry_s


def test_an_empty_secret_file_is_refused_not_used(tmp_path: Path) -> None:
    (tmp_path / ".styledrop").mkdir()
    (tmp_path / ".styledrop" / "link-secret").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        links.link_key(Settings(data_dir=tmp_path))
