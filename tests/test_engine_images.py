"""Images in (every awkward mode, refusals with reasons) and out (metadata, atomic writes)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from engine import ImageError, encode_image, load_image, read_metadata, save_image

MAX = 10_000_000


def _png(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **options)
    return buf.getvalue()


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "LA", "CMYK", "YCbCr"])
def test_plain_modes_load_as_rgb_of_the_same_size(tmp_path: Path, mode: str) -> None:
    fmt = "jpeg" if mode in ("CMYK", "YCbCr") else "png"
    src = make_image(tmp_path / "a.png", (40, 30))
    path = tmp_path / f"a.{fmt}"
    Image.open(src).convert(mode).save(path, fmt.upper())
    image = load_image(path, max_pixels=MAX)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_rgba_is_composited_on_white() -> None:
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255  # red...
    arr[:2, :, 3] = 255  # ...opaque in the top half, fully transparent below
    image = load_image(_png(Image.fromarray(arr, "RGBA")), max_pixels=MAX)
    px = _pixels(image)
    assert (px[:2] == [255, 0, 0]).all()
    assert (px[2:] == [255, 255, 255]).all()


def test_palette_with_transparent_index_is_composited_on_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0] + [0, 0, 255] * 255)
    image.putpixel((0, 0), 1)
    data = _png(image, transparency=0)  # index 0 (black) is transparent
    px = _pixels(load_image(data, max_pixels=MAX))
    assert list(px[0, 0]) == [0, 0, 255]
    assert list(px[3, 3]) == [255, 255, 255]


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    source = Image.fromarray(arr)
    assert source.mode == "I;16"
    data = _png(source)
    px = _pixels(load_image(data, max_pixels=MAX))[0, :, 0]
    # Pillow's own convert() would clip everything above 255 to white.
    assert list(px) == [0, 128, 255, 4]


def test_32_bit_integer_and_float_images(tmp_path: Path) -> None:
    ints = Image.fromarray(np.array([[0, 40000, 65535]], dtype=np.int32))
    ints.save(tmp_path / "i.tiff")
    assert list(_pixels(load_image(tmp_path / "i.tiff", max_pixels=MAX))[0, :, 0]) == [0, 156, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    floats.save(tmp_path / "f.tiff")
    assert list(_pixels(load_image(tmp_path / "f.tiff", max_pixels=MAX))[0, :, 0]) == [0, 128, 255]


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    loaded = load_image(buf.getvalue(), max_pixels=MAX)
    assert loaded.size == (20, 40)
    px = _pixels(loaded)
    assert px[2, 10, 0] > 200 and px[2, 10, 1] < 60  # the band is now at the top
    assert px[-3, 10].min() > 200


def test_sources_path_bytes_and_file_object(tmp_path: Path) -> None:
    path = make_image(tmp_path / "a.png")
    by_path = load_image(path, max_pixels=MAX)
    with path.open("rb") as f:
        by_file = load_image(f, max_pixels=MAX)
    by_bytes = load_image(path.read_bytes(), max_pixels=MAX)
    assert by_path.tobytes() == by_file.tobytes() == by_bytes.tobytes()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is a text file\n" * 10, "not an image"),
        ("truncated", "truncated"),
    ],
)
def test_unusable_input_is_refused_with_a_reason(tmp_path: Path, data, reason: str) -> None:
    if data == "truncated":
        full = make_image(tmp_path / "a.png", (64, 64)).read_bytes()
        data = full[: len(full) // 2]
    with pytest.raises(ImageError, match=reason):
        load_image(data, max_pixels=MAX)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png", max_pixels=MAX)
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path, max_pixels=MAX)


def test_pixel_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png(Image.new("L", (3000, 2000)))  # compresses to a few kB
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(ImageError, match="6,000,000 pixels"):
        load_image(data, max_pixels=1_000_000)
    assert not decoded


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pillow_bomb_guard_becomes_image_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png(Image.new("L", (300, 200)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # warns above, raises above 2x
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(data, max_pixels=MAX)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(data, max_pixels=MAX)


META = {"backbone": "random(seed=0)", "seed": 7, "params": {"size": 40, "style_blend": [0.7, 0.3]}}


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_metadata_round_trips(fmt: str) -> None:
    image = Image.new("RGB", (16, 12), (10, 200, 30))
    data = encode_image(image, fmt, META)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == fmt.upper()
        assert decoded.size == (16, 12)
    assert read_metadata(data) == META


def test_png_has_a_text_chunk_per_key() -> None:
    data = encode_image(Image.new("RGB", (8, 8)), "png", META)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.text["backbone"] == "random(seed=0)"
        assert decoded.text["seed"] == "7"


def test_save_is_atomic_and_picks_format_from_extension(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "result.jpg"
    save_image(Image.new("RGB", (8, 8)), out, META)
    assert Image.open(out).format == "JPEG"
    assert read_metadata(out) == META
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.jpg"]  # no temp left


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "result.png"
    save_image(Image.new("RGB", (8, 8), "red"), out, {"v": 1})

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr("engine.images.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        save_image(Image.new("RGB", (8, 8), "blue"), out, {"v": 2})
    assert read_metadata(out) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_unknown_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="extension"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "result.gif", {})
