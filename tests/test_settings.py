"""Settings are checked when loaded, and secrets never print."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows import storage
from flows.cli import main
from flows.settings import Settings, get_settings


def test_a_lost_run_window_too_close_to_the_heartbeat_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("STYLEDROP_HEARTBEAT_S", "60")
    monkeypatch.setenv("STYLEDROP_LOST_RUN_AFTER_S", "65")
    with pytest.raises(ValidationError, match="must exceed the heartbeat"):
        Settings()
    assert Settings(heartbeat_s=60, lost_run_after_s=71).lost_run_after_s == 71


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"s3_key": "AKIA"}, "go together"),
        ({"s3_secret": "shh"}, "go together"),
        ({"storage": "gs://bucket/out"}, "a local path or an s3:// URL"),
        ({"heartbeat_s": 0}, "greater than or equal to 1"),
    ],
)
def test_inconsistent_settings_are_refused(values: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Settings(**values)


def test_the_s3_secret_never_prints_but_reaches_s3() -> None:
    settings = Settings(s3_key="AKIAEXAMPLE", s3_secret="wJalrXUtnFEMI/K7MDENG")
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "wJalrXUtnFEMI" not in text
    assert storage.s3_options(settings)["secret"] == "wJalrXUtnFEMI/K7MDENG"
    assert "secret" not in storage.s3_options(Settings())


def test_the_cli_names_the_bad_variable_without_a_traceback(monkeypatch, capsys) -> None:
    monkeypatch.setenv("STYLEDROP_HEARTBEAT_S", "0")
    monkeypatch.setenv("STYLEDROP_STORAGE", "ftp://host/out")
    get_settings.cache_clear()
    try:
        assert main(["watch"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("styledrop: error: bad settings:"), err
    assert "STYLEDROP_STORAGE: must be a local path or an s3:// URL" in err, err
    assert "STYLEDROP_HEARTBEAT_S: " in err, err
    assert "Traceback" not in err
