"""Images in and out: safe decoding of anything Pillow reads, and atomic writes with metadata."""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

ImageFormat = Literal["png", "jpeg", "webp"]

# Metadata keys: each metadata item is written as its own PNG text chunk, and the whole dict as
# JSON under METADATA_KEY (PNG) or in EXIF ImageDescription + UserComment (JPEG/WebP).
METADATA_KEY = "styledrop"
_EXIF_IMAGE_DESCRIPTION = 0x010E
_EXIF_IFD = 0x8769
_EXIF_USER_COMMENT = 0x9286

# The image files styledrop reads and writes, everywhere (CLI, flow, gallery, dashboard), in
# order of preference: a gallery with mosaic.png and mosaic.jpg uses mosaic.png.
EXTENSIONS: dict[str, ImageFormat] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".webp": "webp",
}


class ImageError(ValueError):
    """Not a usable image; the message says why in words a user understands."""


# --- reading ----------------------------------------------------------------------------------


def _read_bytes(source: bytes | str | Path | BinaryIO) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "image data"
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError as exc:
            raise ImageError(f"{path}: no such file") from exc
        except IsADirectoryError as exc:
            raise ImageError(f"{path}: is a folder, not an image") from exc
        except OSError as exc:
            raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    name = str(getattr(source, "name", "image data"))
    try:
        return source.read(), name
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc})") from exc


def _scale_to_8bit(arr: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    """Integer or float samples to 0..255: 16-bit by its range, others guessed from the data.

    16-bit PNGs open as I;16 or I and float TIFFs as F; Pillow's own convert() clips these at
    255, which turns most 16-bit photos white.
    """
    arr = arr.astype(np.float64)
    if sixteen_bit:
        return np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0 and hi <= 1.0:
        arr = arr * 255.0  # float images in 0..1
    elif lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= 65535:
        arr = arr / 257.0  # 16-bit
    else:
        arr = (arr - lo) / (hi - lo) * 255.0  # anything else: stretch what is there
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: transparency composited on white, high bit depths scaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        gray = _scale_to_8bit(np.asarray(image), sixteen_bit=mode.startswith("I;16"))
        return Image.fromarray(gray, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"cannot convert an image in mode {mode} to RGB: {exc}") from exc


def load_image(source: bytes | str | Path | BinaryIO, *, max_pixels: int) -> Image.Image:
    """Decode `source` to an RGB image with its EXIF orientation applied.

    The pixel count is checked from the header before anything is decoded, so a decompression
    bomb costs nothing. Raises ImageError with a readable reason for anything unusable.
    """
    data, name = _read_bytes(source)
    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                f"{name}: {width}x{height} is {width * height:,} pixels, more than the "
                f"{max_pixels:,} allowed"
            )
        # Pillow only warns between its limit and twice that (and raises above): refuse both.
        # Checked here rather than by turning the warning into an error, because
        # warnings.catch_warnings is process-global and jobs decode in parallel threads.
        bomb_limit = Image.MAX_IMAGE_PIXELS
        if bomb_limit and width * height > bomb_limit:
            raise Image.DecompressionBombError(
                f"{width * height:,} pixels is more than Pillow's limit of {bomb_limit:,}"
            )
        if width < 1 or height < 1:
            raise ImageError(f"{name}: the image has no pixels ({width}x{height})")
        image.seek(0)  # animations: the first frame
        image.load()
        image = ImageOps.exif_transpose(image) or image
        rgb = to_rgb(image)
        rgb.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{name}: not an image that can be read (it starts with "
            f"{_start(data)})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Truncated or corrupt data: Pillow says "image file is truncated", "broken PNG".
        raise ImageError(f"{name}: damaged or truncated image ({exc})") from exc
    return rgb.copy() if rgb is image else rgb


def _start(data: bytes) -> str:
    """The first bytes as a person reads them: text for a text file (an HTML page saved as
    .jpg), hex otherwise."""
    head = data[:16]
    text = head.decode("ascii", "replace")
    if all(c.isprintable() or c in "\n\r\t" for c in text):
        return repr(text.strip() + ("..." if len(data) > 16 else ""))
    return head.hex(" ") + (" ..." if len(data) > 16 else "")


# --- writing ----------------------------------------------------------------------------------


def _metadata_text(metadata: dict[str, Any]) -> dict[str, str]:
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        for k, v in metadata.items()
    }


def encode_image(image: Image.Image, fmt: ImageFormat, metadata: dict[str, Any]) -> bytes:
    """The image as PNG/JPEG/WebP bytes carrying `metadata` (JSON-able values).

    PNG: one text chunk per key plus the whole dict as JSON under "styledrop". JPEG/WebP: the
    JSON in EXIF ImageDescription and UserComment, which common viewers and exiftool show.
    """
    fmt = fmt.lower()  # type: ignore[assignment]
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in ("png", "jpeg", "webp"):
        raise ImageError(f"unsupported output format {fmt!r}: use png, jpeg or webp")
    rgb = to_rgb(image)
    blob = json.dumps(metadata, sort_keys=True, default=str, ensure_ascii=True)
    buf = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        for key, value in _metadata_text(metadata).items():
            if key != METADATA_KEY:
                info.add_itxt(key, value)
        info.add_itxt(METADATA_KEY, blob)
        rgb.save(buf, "PNG", pnginfo=info)
    else:
        exif = Image.Exif()
        exif[_EXIF_IMAGE_DESCRIPTION] = blob
        # UserComment's first 8 bytes name the character code.
        exif.get_ifd(_EXIF_IFD)[_EXIF_USER_COMMENT] = b"ASCII\0\0\0" + blob.encode("ascii")
        options: dict[str, Any] = {"quality": 92, "exif": exif.tobytes()}
        if fmt == "jpeg":
            options["subsampling"] = 0  # 4:4:4: stylised edges bleed colour with 4:2:0
        rgb.save(buf, fmt.upper(), **options)
    return buf.getvalue()


def format_for(path: str | Path) -> ImageFormat:
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ImageError(
            f"{path}: unknown image extension {suffix or '(none)'!r}; use .png, .jpg or .webp"
        )
    return EXTENSIONS[suffix]


def save_image(image: Image.Image, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write atomically (see write_atomic): readers never see half an image."""
    path = Path(path)
    return write_atomic(path, encode_image(image, format_for(path), metadata))


def write_atomic(path: str | Path, data: bytes, mode: int = 0o666) -> Path:
    """Write ``data`` to a local ``path`` so that readers see the old contents or the new, never
    a partial file: a hidden temporary file in the same folder (same filesystem, so the rename
    is atomic; folder watchers and the dashboard's file route skip dot-files), flushed to disk,
    then renamed over ``path``. ``mode`` (less the umask) holds from the first byte, so a
    secret is never readable by others. The one atomic writer of the project."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(source: bytes | str | Path) -> dict[str, Any]:
    """The metadata dict that encode_image wrote, or {} when there is none."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        text = getattr(image, "text", None) or {}
        blob = text.get(METADATA_KEY) if isinstance(text, dict) else None
        if blob is None:
            blob = image.getexif().get(_EXIF_IMAGE_DESCRIPTION)
    if not blob:
        return {}
    try:
        value = json.loads(blob)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
