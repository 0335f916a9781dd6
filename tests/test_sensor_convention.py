"""The inbox convention: which files are jobs, what a folder and a sidecar mean."""

from __future__ import annotations

import json

import pytest

from flows.sensors.convention import (
    SidecarError,
    is_job,
    job_spec,
    output_of,
    sidecar_of,
    style_of,
    with_suffix_number,
)


@pytest.mark.parametrize(
    "rel",
    ["photo.jpg", "ink/photo.jpg", "ink/2024/IMG 0001.JPEG", "mosaic/no-extension", "x.heic"],
)
def test_ordinary_files_are_jobs(rel: str) -> None:
    assert is_job(rel)


@pytest.mark.parametrize(
    "rel",
    [
        ".hidden.jpg",
        "ink/.DS_Store",
        ".staging/photo.jpg",  # hidden folder
        "photo.jpg.part",
        "photo.jpg.tmp",
        "photo.jpg.crdownload",
        ".photo.jpg.swp",
        "photo.swp",
        "~$report.docx",
        "photo.jpg~",
        "README.md",
        "ink/readme.md",
        "photo.json",
        "photo.jpg.run.json",
        "photo.jpg.error.txt",
        "",
    ],
)
def test_partial_hidden_and_side_files_are_not_jobs(rel: str) -> None:
    assert not is_job(rel)


def test_folder_names_the_style_and_top_level_uses_the_default() -> None:
    assert style_of("ink/photo.jpg", "mosaic") == "ink"
    assert style_of("ink/holiday/photo.jpg", "mosaic") == "ink"
    assert style_of("photo.jpg", "mosaic") == "mosaic"


def test_names_beside_the_file() -> None:
    assert sidecar_of("ink/photo.jpg") == "ink/photo.json"
    assert output_of("ink/photo.jpg") == "ink/photo.png"
    assert output_of("noext") == "noext.png"
    assert with_suffix_number("ink/photo.jpg", 0) == "ink/photo.jpg"
    assert with_suffix_number("ink/photo.jpg", 2) == "ink/photo-2.jpg"


def test_no_sidecar_gives_folder_style_and_defaults() -> None:
    spec = job_spec("ink/photo.jpg", None, default_style="mosaic", defaults={"size": 48})
    assert spec.styles == ["ink"]
    assert spec.options == {"size": 48}
    assert spec.force is False


def test_sidecar_overrides_styles_and_options_with_aliases() -> None:
    side = {
        "styles": ["ink", "mosaic"],
        "blend": [0.7, 0.3],
        "size": 512,
        "strength": 2,
        "preserve_colors": True,
        "force": True,
    }
    spec = job_spec(
        "photo.jpg",
        json.dumps(side).encode(),
        default_style="mosaic",
        defaults={"size": 48, "iterations": 10},
    )
    assert spec.styles == ["ink", "mosaic"]
    assert spec.options == {
        "size": 512,  # the sidecar wins over the sensor's defaults
        "iterations": 10,
        "style_blend": [0.7, 0.3],
        "style_weight": 2,
        "preserve_colors": True,
    }
    assert spec.force is True


def test_single_style_key_and_utf8_bom_are_accepted() -> None:
    spec = job_spec("ink/p.jpg", b'\xef\xbb\xbf{"style": "wave"}', default_style="mosaic")
    assert spec.styles == ["wave"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b'{"styles": []}', "non-empty list"),
        (b'{"styles": "ink"}', "non-empty list"),
        (b'{"style": "a", "styles": ["b"]}', "both 'style' and 'styles'"),
        (b'{"strength": 1, "style_weight": 2}', "twice"),
        (b'{"output": "/tmp/x.png"}', "may not set 'output'"),
        (b'{"force": "yes"}', "true or false"),
    ],
)
def test_bad_sidecars_say_why(data: bytes, words: str) -> None:
    with pytest.raises(SidecarError) as info:
        job_spec("ink/photo.jpg", data, default_style="mosaic")
    assert words in str(info.value)
