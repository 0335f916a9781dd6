"""The style gallery: the shipped images, how `flows.gallery` finds and resolves styles, and the
scripts that generate the images (deterministic, so the shipped files can be rebuilt)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.gallery import (
    Style,
    UnknownStyleError,
    description_from_name,
    list_styles,
    resolve_style,
)
from flows.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STYLES = ROOT / "styles"
SAMPLES = ROOT / "samples"


def load_script(path: Path):
    """Import a generator script (styles/ and samples/ are not packages)."""
    name = f"_styledrop_{path.parent.name}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gallery() -> list[Style]:
    return list_styles(STYLES)


@pytest.fixture
def gallery_copy(tmp_path: Path) -> Path:
    d = tmp_path / "styles"
    shutil.copytree(STYLES, d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return d


def mean_abs_gradient(img: Image.Image) -> float:
    a = np.asarray(img.convert("RGB"), np.float32)
    return float((np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()) / 2)


# --- the shipped gallery ----------------------------------------------------------------------


def test_gallery_has_described_styles_with_thumbnails(gallery: list[Style]) -> None:
    names = [s.name for s in gallery]
    assert len(gallery) >= 8, names
    assert names == sorted(names)
    assert Settings().default_style in names  # "mosaic": what a plain inbox drop uses
    index = json.loads((STYLES / "styles.json").read_text())
    for style in gallery:
        assert style.name == style.path.stem.lower()
        assert style.description == index[style.name]["description"], style.name
        assert len(style.description) > 20, style.name
        assert style.thumbnail == STYLES / "thumbs" / f"{style.name}.jpg", style.name
        with Image.open(style.thumbnail) as thumb:
            assert max(thumb.size) == 160, (style.name, thumb.size)


def test_styles_json_points_at_existing_files() -> None:
    index = json.loads((STYLES / "styles.json").read_text())
    for name, entry in index.items():
        assert (STYLES / entry["file"]).is_file(), name
        assert Path(entry["file"]).stem.lower() == name


def test_gallery_images_are_textured_distinct_rgb(gallery: list[Style]) -> None:
    small = {}
    total = 0
    for style in gallery:
        total += style.path.stat().st_size
        with Image.open(style.path) as img:
            assert img.mode == "RGB", (style.name, img.mode)
            assert min(img.size) >= 256, (style.name, img.size)
            img.load()
        # texture at the finest scale and at a quarter of it, and real colour/tone contrast
        assert mean_abs_gradient(img) > 2.5, style.name
        assert mean_abs_gradient(img.resize((128, 128), Image.BOX)) > 2.5, style.name
        assert np.asarray(img.convert("L"), np.float32).std() > 25, style.name
        small[style.name] = np.asarray(img.resize((64, 64), Image.BOX), np.float32)
    assert total < 4 * 1024 * 1024, f"gallery is {total / 2**20:.1f} MiB"
    for a, b in itertools.combinations(small, 2):
        assert np.abs(small[a] - small[b]).mean() > 15, f"{a} and {b} look alike"


# --- list_styles / resolve_style --------------------------------------------------------------


def test_dropping_an_image_adds_a_style(gallery_copy: Path, gallery: list[Style]) -> None:
    Image.new("RGB", (300, 300), (200, 30, 30)).save(gallery_copy / "Zebra_Stripes.PNG")
    Image.new("RGB", (300, 300), (20, 30, 200)).save(gallery_copy / "blue-night.webp")
    (gallery_copy / "notes.txt").write_text("not an image")
    (gallery_copy / ".hidden.png").write_bytes(b"")
    styles = {s.name: s for s in list_styles(gallery_copy)}
    assert set(styles) == {s.name for s in gallery} | {"zebra_stripes", "blue-night"}
    zebra = styles["zebra_stripes"]
    assert zebra.path == gallery_copy / "Zebra_Stripes.PNG"
    assert zebra.description == "Zebra stripes"
    assert zebra.thumbnail is None
    assert styles["blue-night"].description == "Blue night"
    assert resolve_style("zebra_stripes", gallery_copy) == zebra.path


def test_list_styles_without_index_or_folder(gallery_copy: Path, tmp_path: Path) -> None:
    (gallery_copy / "styles.json").write_text("{ broken")
    shutil.rmtree(gallery_copy / "thumbs")
    styles = list_styles(gallery_copy)
    assert len(styles) >= 8
    mosaic = next(s for s in styles if s.name == "mosaic")
    assert mosaic.description == "Mosaic" and mosaic.thumbnail is None
    assert list_styles(tmp_path / "nowhere") == []


def test_name_clash_prefers_png(gallery_copy: Path) -> None:
    Image.new("RGB", (64, 64)).save(gallery_copy / "twin.jpg")
    Image.new("RGB", (64, 64)).save(gallery_copy / "twin.png")
    assert [s.path.name for s in list_styles(gallery_copy) if s.name == "twin"] == ["twin.png"]
    assert resolve_style("twin.jpg", gallery_copy) == gallery_copy / "twin.jpg"


def test_description_from_name() -> None:
    assert description_from_name("starry_night-2") == "Starry night 2"


def test_resolve_style_by_name_and_path(gallery: list[Style], tmp_path: Path) -> None:
    mosaic = next(s for s in gallery if s.name == "mosaic")
    assert resolve_style("mosaic", STYLES) == mosaic.path
    assert resolve_style("MOSAIC", STYLES) == mosaic.path
    assert resolve_style(mosaic.path.name, STYLES) == mosaic.path
    own = tmp_path / "my style.jpg"
    Image.new("RGB", (64, 64)).save(own)
    assert resolve_style(str(own), STYLES) == own
    assert resolve_style(str(mosaic.path), STYLES) == mosaic.path


def test_resolve_unknown_style_lists_names(gallery: list[Style], tmp_path: Path) -> None:
    with pytest.raises(UnknownStyleError) as info:
        resolve_style("vermeer", STYLES)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "vermeer" in message
    for style in gallery:
        assert style.name in message
    assert info.value.available == [s.name for s in gallery]
    with pytest.raises(UnknownStyleError, match="no images"):
        resolve_style("mosaic", tmp_path / "empty")
    with pytest.raises(UnknownStyleError):
        resolve_style(str(tmp_path), STYLES)  # a folder is not a style


# --- the generator scripts ----------------------------------------------------------------------


def test_make_gallery_is_deterministic() -> None:
    mg = load_script(STYLES / "make_gallery.py")
    assert set(mg.STYLES) == {s.name for s in list_styles(STYLES) if s.name in mg.STYLES}
    assert len(mg.STYLES) >= 8
    a = np.asarray(mg.generate("stained_glass"))
    b = np.asarray(mg.generate("stained_glass"))
    assert np.array_equal(a, b)
    small = [np.asarray(mg.generate("pencil_sketch", size=128)) for _ in range(2)]
    assert np.array_equal(*small)
    # the shipped (lossless) file is what the script makes; tolerate library rounding drift
    with Image.open(STYLES / "stained_glass.png") as shipped:
        diff = np.abs(np.asarray(shipped, np.float32) - a.astype(np.float32)).mean()
    assert diff < 2.0, diff


def test_make_gallery_keeps_other_entries(tmp_path: Path) -> None:
    mg = load_script(STYLES / "make_gallery.py")
    (tmp_path / "styles.json").write_text(json.dumps({"mine": {"description": "My own"}}))
    Image.new("RGB", (64, 64)).save(tmp_path / "mine.png")
    mg.write_gallery(tmp_path, ["color_fields"])
    index = json.loads((tmp_path / "styles.json").read_text())
    assert index["mine"] == {"description": "My own"}
    assert index["color_fields"]["file"] == "color_fields.jpg"
    assert (tmp_path / "thumbs" / "color_fields.jpg").is_file()
    assert [s.name for s in list_styles(tmp_path)] == ["color_fields", "mine"]


def test_sample_content_images() -> None:
    ms = load_script(SAMPLES / "make_samples.py")
    for name in ("landscape", "city"):
        with Image.open(SAMPLES / f"{name}.jpg") as img:
            assert img.mode == "RGB" and img.size == (384, 288), (name, img.mode, img.size)
            shipped = np.asarray(img.resize((96, 72), Image.BOX), np.float32)
        made = ms.SAMPLES[name]()
        assert np.array_equal(np.asarray(made), np.asarray(ms.SAMPLES[name]()))
        # the shipped JPEG is the same scene (compared coarsely: JPEG and sensor noise)
        diff = np.abs(np.asarray(made.resize((96, 72), Image.BOX), np.float32) - shipped).mean()
        assert diff < 3.0, (name, diff)
