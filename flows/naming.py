"""How a person tells jobs apart: the photo's name and the styles, from a run's parameters.

One definition for every way a run is started (inbox, S3, dashboard, the API): the flow
names its run with `run_name` (Prefect's `flow_run_name`), and the dashboard shows the same
words before the run has started. Plain functions of the parameters, no Prefect, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit


def file_name(location: str) -> str:
    """The last part of a local path or URL, as its owner named it (a dashboard upload keeps
    its original name: `_uploads/<hash>/<name>`)."""
    path = urlsplit(location).path if "://" in location else location
    return PurePosixPath(unquote(path).replace("\\", "/")).name or location


def style_name(style: str) -> str:
    """A gallery name as it is; a path or URL by its file's stem."""
    if "/" in style or "\\" in style:
        return PurePosixPath(file_name(style)).stem
    return style


def styles_label(styles: Sequence[str] | None, default: str = "default style") -> str:
    return " + ".join(style_name(str(s)) for s in styles) if styles else default


def run_name(parameters: dict[str, Any]) -> str:
    """e.g. "photo.jpg · mosaic" or "beach.png · ink_wash + waves"."""
    photo = file_name(str(parameters.get("content") or "?"))
    return f"{photo} · {styles_label(parameters.get('styles'))}"
