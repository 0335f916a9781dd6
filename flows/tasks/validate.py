"""Step 1: refuse what cannot be stylised, with a reason a user understands, before any GPU
time is spent; for what can, work out the job's id from its inputs' bytes and parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

import engine
from engine.images import EXTENSIONS
from flows import storage
from flows.gallery import UnknownStyleError, resolve_style
from flows.jobs import Job, JobRejected, StyleInput, compute_job_id, sha256
from flows.settings import Settings, get_settings
from flows.tasks.retry import io_task_options

FIX_OPTIONS = "Fix the options (for an inbox file: its sidecar .json) and submit again"


@task(name="validate inputs", **io_task_options())
def validate_job(
    content: str,
    styles: list[str],
    options: dict[str, Any],
    output: str | None,
    content_name: str | None = None,
) -> Job:
    """Open every input with the engine's loader and check the parameters.

    Raises JobRejected (never retried) for bad input, naming the content as ``content_name``
    (where the user put it) when given; storage faults propagate as I/O errors so that
    Prefect retries them.
    """
    settings = get_settings()
    name = content_name or content
    params = parse_params(options, n_styles=len(styles))
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


def parse_params(options: dict[str, Any], n_styles: int) -> engine.StyleParams:
    """``options`` -> StyleParams, refusing unknown keys, wrong types and values out of range."""
    if not isinstance(options, dict):
        raise JobRejected(
            f"options must be a mapping of parameter names to values, got {options!r}", FIX_OPTIONS
        )
    try:
        params = engine.StyleParams.from_dict(options)
        params.validate(n_styles)
    except engine.ParamError as exc:
        raise JobRejected(f"bad parameters: {exc}", FIX_OPTIONS) from exc
    except TypeError as exc:  # e.g. size="big": the comparisons in validate() fail
        raise JobRejected(
            f"bad parameters: a value has the wrong type ({exc})", FIX_OPTIONS
        ) from exc
    return params


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
