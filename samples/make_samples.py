"""Generate the demo content images ``samples/landscape.jpg`` and ``samples/city.jpg``.

Small, photo-like scenes (soft gradients, a few objects, a little sensor noise) painted from
fixed seeds with numpy + Pillow only, so the project can ship them. The local stack copies them
into the inbox on first start as something to stylise::

    python samples/make_samples.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 384, 288
HERE = Path(__file__).resolve().parent


def _rgb(h: str) -> np.ndarray:
    return np.array([int(h[i : i + 2], 16) for i in (1, 3, 5)], np.float32) / 255


def _vgrad(h: int, w: int, top: str, bottom: str, y0: float = 0, y1: float = 1) -> np.ndarray:
    t = np.clip((np.linspace(0, 1, h)[:, None] - y0) / (y1 - y0), 0, 1)[..., None]
    return np.broadcast_to(_rgb(top) * (1 - t) + _rgb(bottom) * t, (h, w, 3)).copy()


def _ridge(rng: np.random.Generator, w: int, base: float, amp: float, h: int) -> np.ndarray:
    """A hill line in pixel rows: a few smooth bumps plus fine roughness."""
    x = np.linspace(0, 1, w)
    y = np.zeros(w)
    for _ in range(4):
        c, s, a = rng.uniform(-0.2, 1.2), rng.uniform(0.1, 0.35), rng.uniform(0.3, 1)
        y = np.maximum(y, a * np.exp(-(((x - c) / s) ** 2)))
    rough = np.interp(x, np.linspace(0, 1, 40), rng.normal(0, 0.04, 40))
    return (base - amp * (y + rough)) * h


def _finish(img: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Vignette + mild sensor noise, like a phone photo."""
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - w / 2) / w, (yy - h / 2) / h)
    img = img * (1 - 0.35 * r**2)[..., None] + rng.normal(0, 0.012, img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def make_landscape(w: int = WIDTH, h: int = HEIGHT) -> Image.Image:
    """Evening sky, sun, layered hills, a lake with reflections, a tree and a meadow."""
    rng = np.random.default_rng(2201)
    img = _vgrad(h, w, "#3d6fb6", "#f6c98a", 0, 0.55)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sun = np.exp(-((np.hypot(xx - 0.7 * w, yy - 0.3 * h) / (0.05 * w)) ** 4))
    glow = np.exp(-np.hypot(xx - 0.7 * w, yy - 0.3 * h) / (0.18 * w))
    img = img + 0.35 * glow[..., None] * _rgb("#ffd9a0")
    img = img * (1 - sun[..., None]) + sun[..., None] * _rgb("#fff4d6")
    for k, (base, amp, col) in enumerate(
        [(0.55, 0.22, "#7b87a8"), (0.6, 0.16, "#56708a"), (0.68, 0.12, "#3f6b45")]
    ):
        ridge = _ridge(rng, w, base, amp, h)[None, :]
        hill = (yy > ridge)[..., None]
        shade = 1 - 0.25 * np.clip((yy - ridge) / (0.3 * h), 0, 1)[..., None]
        texture = 1 + (0.05 + 0.04 * k) * rng.normal(0, 1, (h, w, 1))
        img = np.where(hill, _rgb(col) * shade * texture, img)
    lake_top = int(0.72 * h)
    lake = img[lake_top - (h - lake_top) : lake_top][::-1].copy()  # mirror the scene above
    ripple = 1 + 0.08 * np.sin(yy[lake_top:] * 1.7 + 3 * np.sin(xx[lake_top:] / 23))[..., None]
    img[lake_top:] = (lake * 0.65 + _rgb("#2b4f73") * 0.35) * ripple
    meadow = yy > (0.86 * h + 10 * np.sin(xx / 40))
    grass = _rgb("#4f7d2c") * (0.8 + 0.3 * rng.random((h, w, 1)))
    img = np.where(meadow[..., None], grass, img)
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    tx, ty = int(0.18 * w), int(0.9 * h)
    draw.rectangle([tx - 3, ty - 60, tx + 3, ty], fill=(60, 40, 28))  # trunk
    for _ in range(40):  # foliage
        cx, cy = tx + rng.normal(0, 16), ty - 70 + rng.normal(0, 16)
        r = rng.uniform(8, 15)
        g = int(rng.integers(60, 110))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(30, g, 35))
    pil = pil.filter(ImageFilter.GaussianBlur(0.6))
    return _finish(np.asarray(pil, np.float32) / 255, rng)


def make_city(w: int = WIDTH, h: int = HEIGHT) -> Image.Image:
    """Dusk skyline: layered buildings with lit windows, a street with lights and a river."""
    rng = np.random.default_rng(2202)
    sky = _vgrad(h, w, "#1b2550", "#e98a5a", 0, 0.7)
    pil = Image.fromarray((sky * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    ground = int(0.74 * h)
    layers = [(0.25, 0.55, 70), (0.15, 0.45, 45), (0.1, 0.3, 28)]  # far to near
    for layer, (hmin, hmax, tone) in enumerate(layers):
        x = int(rng.integers(-20, 0))
        while x < w:
            bw = int(rng.integers(18, 46))
            top = int(ground - rng.uniform(hmin, hmax) * h)
            c = tone + int(rng.integers(-8, 9))
            draw.rectangle([x, top, x + bw, ground], fill=(c, c + 4, c + 18))
            if rng.random() < 0.25:  # a spire or a stepped roof
                draw.polygon([(x + bw // 3, top), (x + bw // 2, top - 18), (x + 2 * bw // 3, top)],
                             fill=(c, c + 4, c + 18))
            for wy in range(top + 5, ground - 6, 7):  # windows
                for wx in range(x + 3, x + bw - 4, 6):
                    if rng.random() < 0.35 + 0.1 * layer:
                        lit = rng.integers(180, 256)
                        draw.rectangle([wx, wy, wx + 2, wy + 3],
                                       fill=(int(lit), int(lit * 0.8), int(lit * 0.45)))
            x += bw + int(rng.integers(0, 6))
    draw.rectangle([0, ground, w, h], fill=(34, 34, 42))  # street
    for k in range(0, w, 48):  # street lights and their pools
        draw.line([(k + 10, ground + 4), (k + 10, ground - 26)], fill=(20, 20, 24), width=2)
        draw.ellipse([k + 6, ground - 30, k + 14, ground - 22], fill=(255, 220, 150))
    img = np.asarray(pil, np.float32) / 255
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for k in range(0, w, 48):
        pool = np.exp(-(((xx - k - 10) / 22) ** 2 + ((yy - ground - 10) / 8) ** 2))
        img = img + 0.45 * pool[..., None] * _rgb("#ffcf8a")
    river_top = int(0.84 * h)
    refl = img[2 * river_top - h : river_top][::-1]
    wobble = np.roll(refl, 2, axis=1) * 0.5 + refl * 0.5
    img[river_top:] = wobble * 0.55 + _rgb("#102038") * 0.45
    return _finish(img, rng)


SAMPLES: dict[str, Callable[[], Image.Image]] = {"landscape": make_landscape, "city": make_city}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in SAMPLES.items():
        path = args.out / f"{name}.jpg"
        make().save(path, format="JPEG", quality=90, optimize=True)
        print(f"{path} {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
