"""Refuse what cannot be stylised, with a reason a user understands, before any GPU time is
spent; for what can, work out the job's id from its inputs' bytes and parameters.

The one set of rules for every way in: the flow runs ``check_job`` first thing, and the inbox
sensors run it before they submit a file, so a bad file is refused in seconds whatever the
queue holds. No Prefect here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import engine
from engine.images import EXTENSIONS
from flows import storage
from flows.gallery import UnknownStyleError, resolve_style
from flows.jobs import Job, JobRejected, StyleInput, compute_job_id, sha256
from flows.options import parse_options
from flows.settings import Settings


def check_job(
    content: str,
    styles: list[str],
    options: Mapping[str, Any] | Any,
    output: str | None,
    content_name: str | None,
    settings: Settings,
) -> Job:
    """Open every input with the engine's loader and check the parameters.

    Raises JobRejected (never retried) for bad input, naming the content as ``content_name``
    (where the user put it) when given; storage faults propagate as I/O errors so that the
    caller may retry them.
    """
    name = content_name or content
    params = parse_options(options, n_styles=len(styles))
    content_bytes = read_input(content, "content image", settings, name)
    width, height = open_image(content_bytes, name, settings).size
    if min(width, height) < settings.min_side:
        raise JobRejected(
            f"the content image {name} is {width}x{height} pixels: too small to stylise "
            f"(the shorter side must be at least {settings.min_side} pixels)",
            "Use a larger image",
        )
    style_inputs = []
    for requested in styles:
        source = locate_style(requested, settings)
        data = read_input(source, f"style {requested!r}", settings)
        open_image(data, source, settings)
        style_inputs.append(StyleInput(requested=requested, source=source, sha256=sha256(data)))
    if output is not None:
        output_format(output)
    content_sha = sha256(content_bytes)
    return Job(
        job_id=compute_job_id(content_sha, [s.sha256 for s in style_inputs], params),
        content=content,
        content_sha256=content_sha,
        content_size=(width, height),
        styles=style_inputs,
        params=params.to_dict(),
        output=output,
    )


def read_input(source: str, what: str, settings: Settings, name: str | None = None) -> bytes:
    """Bytes of a local path or s3:// URL (called ``name`` in messages). Missing is the
    caller's mistake (JobRejected); anything else (network, S3 away) is left for the retry
    policy."""
    name = name or source
    try:
        return storage.read_bytes(source, settings)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise JobRejected(f"{what} not found: {name}", "Check the path and submit again") from exc
    except PermissionError as exc:
        raise JobRejected(
            f"{what} cannot be read (permission denied): {name}",
            "Make the file readable and submit again",
        ) from exc


def open_image(data: bytes, name: str, settings: Settings) -> Any:
    """Decode with the engine's loader: refuses non-images and decompression bombs."""
    try:
        return engine.load_image(data, max_pixels=settings.max_pixels)
    except engine.ImageError as exc:
        # The loader names bytes "image data"; the user knows the file by ``name``.
        why = str(exc).removeprefix("image data: ")
        raise JobRejected(
            f"{name} cannot be used: {why}",
            "Use a complete PNG, JPEG or WebP image",
        ) from exc


def locate_style(requested: str, settings: Settings) -> str:
    """A gallery name or a local path -> the file; a URL is used as it is."""
    if "://" in requested:
        return requested
    try:
        return str(resolve_style(requested, Path(settings.styles_dir)))
    except UnknownStyleError as exc:
        raise JobRejected(
            str(exc), "Name one of these, or give the path or URL of a style image"
        ) from exc


def output_format(output: str) -> str:
    """The image format for ``output=``, from its extension."""
    suffix = Path(output).suffix.lower()
    if suffix not in EXTENSIONS:
        raise JobRejected(
            f"output {output!r} must end in one of {', '.join(sorted(EXTENSIONS))}",
            "Change its extension",
        )
    return EXTENSIONS[suffix]
