"""The inbox convention: which dropped files are jobs, which style a folder means, what a
sidecar may say, and where the result goes. Pure functions on relative paths and bytes, shared
by the folder and the S3 sensor (documented for users in inbox/README.md).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

# Names that editors, browsers and copy tools use while a file is still being written, or
# for their own bookkeeping. They never become jobs: the finished file arrives under its real
# name (usually by a rename, which the sensors see).
PARTIAL_SUFFIXES = (
    ".part",
    ".partial",
    ".tmp",
    ".temp",
    ".crdownload",
    ".download",
    ".swp",
    ".swx",
    ".filepart",
    ".!ut",
    ".opdownload",
)
IGNORED_NAMES = {"readme.md", "readme.txt", "thumbs.db", "desktop.ini"}
SIDECAR_SUFFIX = ".json"
ERROR_SUFFIX = ".error.txt"  # the note beside a file in failed/ saying why

# Sidecar keys the sensor itself interprets; every other key is an engine option
# (a StyleParams field) passed through for the flow to validate.
ALIASES = {"strength": "style_weight", "blend": "style_blend"}
# Keys of the flow call that the convention decides; a sidecar may not move them.
RESERVED = {"content", "output", "options", "parameters"}


class SidecarError(ValueError):
    """The sidecar cannot be used; the message says why in words a user can act on."""


@dataclass
class JobSpec:
    """What to ask the flow for one dropped file (everything but content and output)."""

    styles: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    force: bool = False


def is_job(rel: str) -> bool:
    """True when the file at ``rel`` (relative to inbox/) should be stylised.

    Hidden files and folders, partial/temporary names, Office lock files (``~$x.docx``),
    editor backups (``x~``), READMEs and JSON (sidecars, our own bookkeeping) are not jobs.
    """
    parts = [p for p in rel.replace("\\", "/").split("/") if p]
    if not parts:
        return False
    if any(p.startswith(".") for p in parts):
        return False
    name = parts[-1]
    lower = name.lower()
    return not (
        lower.startswith("~")
        or lower.endswith("~")
        or lower.endswith(PARTIAL_SUFFIXES)
        or lower in IGNORED_NAMES
        or lower.endswith(SIDECAR_SUFFIX)
        or lower.endswith(ERROR_SUFFIX)
    )


def style_of(rel: str, default_style: str) -> str:
    """``<style>/photo.jpg`` means gallery style ``<style>``; deeper folders only organise
    (``ink/2024/photo.jpg`` is still ``ink``); a file directly in inbox/ gets the default."""
    parts = [p for p in rel.split("/") if p]
    return parts[0] if len(parts) > 1 else default_style


def sidecar_of(rel: str) -> str:
    """The sidecar that belongs to ``rel``: same folder, same stem, ``.json``
    (``ink/photo.jpg`` -> ``ink/photo.json``)."""
    stem, _ = posixpath.splitext(rel)
    return stem + SIDECAR_SUFFIX


def output_of(rel: str) -> str:
    """Results are PNG at the same relative path: ``ink/photo.jpg`` -> ``ink/photo.png``."""
    stem, _ = posixpath.splitext(rel)
    return stem + ".png"


def with_suffix_number(rel: str, n: int) -> str:
    """``ink/photo.jpg`` -> ``ink/photo-2.jpg``: how a name is made unique, never by
    overwriting (n=0 gives the name unchanged)."""
    if n == 0:
        return rel
    stem, ext = posixpath.splitext(rel)
    return f"{stem}-{n}{ext}"


def parse_sidecar(data: bytes | None) -> dict[str, Any]:
    """Parse and shape-check a sidecar (None: no sidecar). Returns the object with aliases
    resolved; raises SidecarError with a readable reason.

    Engine options (types, ranges, unknown names, one blend weight per style) are checked by
    flows/checks.py, the flow's own rules, which the sensor runs before it submits.
    """
    if data is None:
        return {}
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise SidecarError(f"the sidecar is not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise SidecarError(
            f"the sidecar is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(obj, dict):
        raise SidecarError(
            f'the sidecar must be a JSON object like {{"size": 512}}, got a {type(obj).__name__}'
        )
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = ALIASES.get(key, key)
        if name in out:
            raise SidecarError(f"the sidecar sets {name!r} twice (as {key!r} and {name!r})")
        if name in RESERVED:
            raise SidecarError(
                f"the sidecar may not set {key!r}: where the image comes from and where the "
                "result goes follow from the file's place in the inbox"
            )
        out[name] = value

    if "style" in out and "styles" in out:
        raise SidecarError("the sidecar sets both 'style' and 'styles': use one")
    if "style" in out:
        out["styles"] = [out.pop("style")]
    if "styles" in out:
        styles = out["styles"]
        if (
            not isinstance(styles, list)
            or not styles
            or not all(isinstance(s, str) and s.strip() for s in styles)
        ):
            raise SidecarError(
                '\'styles\' must be a non-empty list of style names, e.g. ["ink", "mosaic"]'
            )
        out["styles"] = [s.strip() for s in styles]
    if "force" in out and not isinstance(out["force"], bool):
        raise SidecarError("'force' must be true or false")
    return out


def job_spec(
    rel: str, sidecar: bytes | None, *, default_style: str, defaults: dict[str, Any] | None = None
) -> JobSpec:
    """The flow parameters for the file at ``rel``: its folder's style (or the sidecar's
    ``styles``), the sensor's default options overlaid by the sidecar's."""
    side = parse_sidecar(sidecar)
    styles = side.pop("styles", None) or [style_of(rel, default_style)]
    force = bool(side.pop("force", False))
    options = {**(defaults or {}), **side}
    return JobSpec(styles=styles, options=options, force=force)
