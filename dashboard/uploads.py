"""Checks on an uploaded picture before anything is stored or submitted: type, size, and that it
really decodes. Pure functions (no Streamlit) so the rules are testable on their own."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePath

from engine.images import EXTENSIONS

# Given to st.file_uploader as MIME types: the browser's picker filters on them, and Streamlit
# then leaves the decision to us, so a wrong file gets our message rather than an exception.
ALLOWED_MIME_TYPES = [f"image/{fmt}" for fmt in dict.fromkeys(EXTENSIONS.values())]


class UploadRejected(ValueError):
    """The upload cannot be used; the message says why, for the person who uploaded it."""


@dataclass(frozen=True)
class CheckedImage:
    name: str
    data: bytes
    ext: str  # normalised: png, jpg or webp
    width: int
    height: int


def check_upload(
    name: str,
    data: bytes,
    *,
    max_mb: int,
    max_pixels: int,
    min_side: int = 1,
    what: str = "The picture",
) -> CheckedImage:
    ext = PurePath(name).suffix.lower().lstrip(".")
    if f".{ext}" not in EXTENSIONS:
        shown = f".{ext}" if ext else "no extension"
        raise UploadRejected(
            f"{what} {name!r} is not a PNG, JPEG or WebP file ({shown}). "
            "Upload a .png, .jpg, .jpeg or .webp image."
        )
    if len(data) > max_mb * 1024 * 1024:
        raise UploadRejected(
            f"{what} {name!r} is {len(data) / 1024 / 1024:.1f} MB; the limit is {max_mb} MB. "
            "Upload a smaller file (or raise STYLEDROP_MAX_UPLOAD_MB)."
        )
    width, height = decode_size(data, name, max_pixels)
    if min(width, height) < min_side:
        raise UploadRejected(
            f"{what} {name!r} is only {width}x{height} pixels; its short side must be at least "
            f"{min_side} px."
        )
    return CheckedImage(name, data, "jpg" if ext == "jpeg" else ext, width, height)


def decode_size(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """Decode fully (a truncated file fails here, not in the flow) and return (width, height).

    engine.load_image applies the same rules the flow will (pixel limit, EXIF rotation); it
    imports torch, so the first upload of a dashboard process pays a few seconds. Without the
    engine installed, Pillow's own decode does the check.
    """
    try:
        from engine import ImageError, load_image
    except ImportError:
        return _pillow_size(data, name, max_pixels)
    try:
        image = load_image(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise UploadRejected(f"{name!r} could not be read as an image: {_reason(exc)}") from exc
    return image.size


def _reason(exc: Exception) -> str:
    # load_image prefixes its messages with the source's name ("image data: ..."); we name the
    # file ourselves.
    return str(exc).removeprefix("image data: ")


def _pillow_size(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UploadRejected(
                    f"{name!r} is {width}x{height} pixels, more than the {max_pixels:,} allowed."
                )
            image.load()
    except UploadRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        raise UploadRejected(f"{name!r} could not be read as an image: {exc}") from exc
    return width, height
