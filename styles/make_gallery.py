"""Generate styledrop's style gallery procedurally: every image here is made by this script.

Nothing is copied from anywhere: each style is painted from fixed seeds with numpy + Pillow only,
so the gallery can be shipped under the project's licence and rebuilt bit for bit::

    python styles/make_gallery.py                 # all styles, thumbnails and styles.json
    python styles/make_gallery.py --only mosaic   # just one (others and their entries are kept)
    python styles/make_gallery.py --out /tmp/g    # somewhere else

What makes a style image work for Gatys-style transfer is texture at several scales (strokes,
edges, dots, colour contrast), so every generator layers large shapes, medium marks and fine
grain. Stroke-based styles are drawn at twice the size and downsampled, which anti-aliases them.

Any other image dropped into ``styles/`` is a style too (see ``flows/gallery.py``); this script
only rewrites the files and ``styles.json`` entries of the styles it generates.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 512
THUMB_SIZE = 160
HERE = Path(__file__).resolve().parent

Rng = np.random.Generator
Array = np.ndarray


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def palette(*hexes: str) -> Array:
    """'#rrggbb' strings -> (k, 3) float array in 0..1."""
    return np.array([[int(h[i : i + 2], 16) / 255 for i in (1, 3, 5)] for h in hexes])


def resize_f(a: Array, w: int, h: int, resample: int = Image.BICUBIC) -> Array:
    """Resize a 2-D float array with Pillow (mode F)."""
    return np.asarray(Image.fromarray(np.asarray(a, np.float32), "F").resize((w, h), resample))


def fbm(rng: Rng, h: int, w: int, base: float = 3, octaves: int = 5, gain: float = 0.5,
        stretch: tuple[float, float] = (1.0, 1.0)) -> Array:
    """Fractal value noise in 0..1: random grids upsampled (bicubic) and summed over octaves.

    `stretch` = (y, x) multipliers on the grid density: (4, 0.5) gives horizontal streaks.
    """
    total = np.zeros((h, w), np.float32)
    amp = 1.0
    for o in range(octaves):
        cells = base * 2**o
        gy = max(2, round(cells * stretch[0]) + 2)
        gx = max(2, round(cells * stretch[1]) + 2)
        total += amp * resize_f(rng.random((gy, gx)), w, h)
        amp *= gain
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / (hi - lo + 1e-9)


def noise1d(rng: Rng, n: int, base: int = 4, octaves: int = 6, gain: float = 0.55) -> Array:
    """1-D fractal noise of length n in roughly -1..1 (for ridges and horizons)."""
    x = np.linspace(0, 1, n)
    total = np.zeros(n)
    amp = 1.0
    for o in range(octaves):
        k = base * 2**o + 1
        total += amp * np.interp(x, np.linspace(0, 1, k), rng.random(k) * 2 - 1)
        amp *= gain
    return total / np.abs(total).max()


def smoothstep(e0: float, e1: float, x: Array) -> Array:
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def grid(n: int) -> tuple[Array, Array]:
    """(y, x) pixel-centre coordinates of an n x n image, float32."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    return yy + 0.5, xx + 0.5


def ramp(t: Array, colours: Array) -> Array:
    """Map t in 0..1 through a colour ramp (k, 3) by linear interpolation -> (..., 3)."""
    t = np.clip(t, 0, 1) * (len(colours) - 1)
    i = np.minimum(t.astype(int), len(colours) - 2)
    f = (t - i)[..., None]
    return colours[i] * (1 - f) + colours[i + 1] * f


def to_image(rgb: Array) -> Image.Image:
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def to_array(img: Image.Image) -> Array:
    return np.asarray(img.convert("RGB"), np.float32) / 255


def rgb255(c: Array) -> tuple[int, int, int]:
    c = np.clip(c, 0, 1) * 255 + 0.5
    return int(c[0]), int(c[1]), int(c[2])


def voronoi(rng: Rng, n: int, cell: float, jitter: float = 0.9
            ) -> tuple[Array, Array, Array, Array, Array]:
    """Jittered-grid Voronoi diagram of an n x n image.

    Returns (label, d1, d2, seed_x, seed_y): the nearest seed's index per pixel, the distances
    to the nearest and second-nearest seed, and the seed coordinates (indexable by label).
    """
    gn = int(math.ceil(n / cell)) + 3
    gx = np.arange(gn)[None, :] - 1 + 0.5 + (rng.random((gn, gn)) - 0.5) * jitter
    gy = np.arange(gn)[:, None] - 1 + 0.5 + (rng.random((gn, gn)) - 0.5) * jitter
    sx, sy = (gx * cell).ravel(), (gy * cell).ravel()
    yy, xx = grid(n)
    cy = (yy // cell).astype(int) + 1
    cx = (xx // cell).astype(int) + 1
    d1 = np.full((n, n), np.inf, np.float32)
    d2 = np.full((n, n), np.inf, np.float32)
    label = np.zeros((n, n), int)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            lab = np.clip(cy + dy, 0, gn - 1) * gn + np.clip(cx + dx, 0, gn - 1)
            d = np.hypot(xx - sx[lab], yy - sy[lab])
            closer = d < d1
            d2 = np.where(closer, d1, np.minimum(d2, d))
            label = np.where(closer, lab, label)
            d1 = np.where(closer, d, d1)
    return label, d1, d2, sx, sy


class FlowField:
    """An angle field sampled at pixel positions; traces streamlines for brush strokes."""

    def __init__(self, angle: Array, scale: float = 1.0) -> None:
        self.angle = angle
        self.scale = scale  # canvas pixels per field pixel
        self.h, self.w = angle.shape

    def at(self, x: float, y: float) -> float:
        i = min(max(int(y / self.scale), 0), self.h - 1)
        j = min(max(int(x / self.scale), 0), self.w - 1)
        return float(self.angle[i, j])

    def trace(self, x: float, y: float, steps: int, step: float) -> list[tuple[float, float]]:
        pts = [(x, y)]
        for _ in range(steps):
            a = self.at(x, y)
            x += math.cos(a) * step
            y += math.sin(a) * step
            pts.append((x, y))
        return pts


def offset_path(pts: Sequence[tuple[float, float]], off: float) -> list[tuple[float, float]]:
    """A polyline shifted sideways by `off` pixels (along each segment's normal)."""
    out = []
    for k, (x, y) in enumerate(pts):
        x0, y0 = pts[max(k - 1, 0)]
        x1, y1 = pts[min(k + 1, len(pts) - 1)]
        dx, dy = x1 - x0, y1 - y0
        norm = math.hypot(dx, dy) or 1.0
        out.append((x - dy / norm * off, y + dx / norm * off))
    return out


def downsample(img: Image.Image, n: int) -> Image.Image:
    return img.resize((n, n), Image.LANCZOS)


# --------------------------------------------------------------------------------------------
# the styles
# --------------------------------------------------------------------------------------------


def render_mosaic(rng: Rng, n: int) -> Image.Image:
    """Irregular tesserae in grout, laid in a radial rosette on a wave border."""
    cell = n / 40
    label, d1, d2, sx, sy = voronoi(rng, n, cell, jitter=0.85)
    u, v = sx / n * 2 - 1, sy / n * 2 - 1  # design evaluated at each tile's centre
    r, th = np.hypot(u, v), np.arctan2(v, u)
    cols = palette("#efe3c2", "#c0532b", "#e5a823", "#1f4e8c", "#2a8c82", "#2b2a33",
                   "#d9787a", "#5b8a3a", "#fbf7ee", "#7a3b69")
    wave = np.sin((u + v) * 7 + 1.3 * np.sin((u - v) * 5))
    idx = np.where(wave > 0.35, 4, np.where(wave < -0.45, 7, 0))  # background bands
    idx = np.where(r < 0.95, 8, idx)
    idx = np.where(r < 0.92, 5, idx)
    idx = np.where(r < 0.88, 3, idx)
    petal = r < 0.56 + 0.2 * np.cos(8 * th)
    idx = np.where(petal, np.where(np.cos(8 * th) > 0.55, 6, 1), idx)
    idx = np.where(r < 0.68 + 0.1 * np.cos(16 * th + math.pi) - 0.35, 9, idx)
    idx = np.where(r < 0.3 + 0.07 * np.cos(8 * th + math.pi / 8), 2, idx)
    idx = np.where(r < 0.13, 3, idx)
    idx = np.where(r < 0.06, 8, idx)
    tile = cols[idx] * (0.82 + 0.3 * rng.random((len(idx), 1)))
    tile += (rng.random((len(idx), 3)) - 0.5) * 0.08
    rgb = tile[label]
    # each tessera is slightly domed: lighter towards its upper left, darker at its rim
    yy, xx = grid(n)
    lx, ly = (xx - sx[label]) / cell, (yy - sy[label]) / cell
    rgb *= (1.05 - 0.3 * (d1 / cell) ** 2 - 0.12 * (lx + ly))[..., None]
    rgb *= (0.94 + 0.12 * fbm(rng, n, n, base=40, octaves=2))[..., None]
    grout = palette("#3d3832")[0] * (0.7 + 0.5 * fbm(rng, n, n, base=30, octaves=3))[..., None]
    a = smoothstep(1.2, 2.8, d2 - d1)[..., None]
    return to_image(rgb * a + grout * (1 - a))


def render_stained_glass(rng: Rng, n: int) -> Image.Image:
    """A rose window: jewel-coloured glass between black lead cames, backlit."""
    label, d1, d2, sx, sy = voronoi(rng, n, n / 8.5, jitter=0.95)
    yy, xx = grid(n)
    u, v = xx / n * 2 - 1, yy / n * 2 - 1
    r, th = np.hypot(u, v), np.arctan2(v, u)
    rings = np.array([0.22, 0.5, 0.86])
    ring = np.searchsorted(rings, r)  # 0 inside the first circle ... 3 outside the window
    spokes = np.where(ring == 1, 8, np.where(ring == 2, 16, 1))
    sector = np.floor((th + math.pi) / (2 * math.pi) * spokes).astype(int)
    key = (label * 4 + ring) * 16 + sector
    uniq, inv = np.unique(key, return_inverse=True)
    inv = inv.reshape(n, n)
    jewels = palette("#9b111e", "#0f52ba", "#0b7a3e", "#f2b01e", "#6a3d9a", "#1b8fa6",
                     "#d8dcc4", "#c4531a", "#193a8a")
    ring_of_region = (uniq // 16) % 4
    weights = np.array([[0.30, 0.05, 0.0, 0.45, 0.0, 0.0, 0.05, 0.15, 0.0],   # centre: warm
                        [0.10, 0.30, 0.0, 0.10, 0.25, 0.05, 0.0, 0.0, 0.20],  # inner ring: blue
                        [0.25, 0.10, 0.25, 0.10, 0.05, 0.15, 0.05, 0.05, 0.0],
                        [0.05, 0.25, 0.15, 0.05, 0.10, 0.15, 0.15, 0.0, 0.10]])
    choice = np.array([rng.choice(len(jewels), p=weights[k]) for k in ring_of_region])
    glass = jewels[choice] * (0.8 + 0.4 * rng.random((len(uniq), 1)))
    rgb = glass[inv]
    light = 0.6 + 0.7 * fbm(rng, n, n, base=2, octaves=3)  # uneven backlight
    seedy = 0.9 + 0.2 * fbm(rng, n, n, base=24, octaves=3)  # bubbles and ripples in the glass
    streak = 0.92 + 0.16 * fbm(rng, n, n, base=6, octaves=4, stretch=(0.3, 3))
    rgb = rgb * (light * seedy * streak)[..., None]
    # distance to the nearest lead came: cell borders, ring circles, radial spokes
    lead = (d2 - d1) / 2
    lead = np.minimum(lead, np.min(np.abs(r[..., None] - rings) * n / 2, axis=-1))
    frac = (th + math.pi) / (2 * math.pi) * spokes
    spoke_d = np.abs(frac - np.round(frac)) / spokes * 2 * math.pi * r * n / 2
    lead = np.minimum(lead, np.where((ring == 1) | (ring == 2), spoke_d, np.inf))
    width = 3.2
    rgb *= (0.55 + 0.45 * smoothstep(width, width + 12, lead))[..., None]  # glow dims at cames
    came = (0.06 + 0.1 * np.exp(-((lead / width) ** 2) * 3))[..., None] * np.ones(3)
    a = smoothstep(width - 0.8, width + 0.8, lead)[..., None]
    return to_image(rgb * a + came * (1 - a))


def render_cubist(rng: Rng, n: int) -> Image.Image:
    """Analytic-cubist shards: the plane cut by lines into facets of ochre, umber and slate."""
    yy, xx = grid(n)
    u, v = xx / n, yy / n
    bits = np.zeros((n, n), np.int64)
    lines = []
    for i in range(17):
        px, py = rng.normal(0.5, 0.22, 2)
        a = rng.uniform(0, math.pi)
        nx, ny = math.cos(a), math.sin(a)
        d = (u - px) * nx + (v - py) * ny
        bits |= (d > 0).astype(np.int64) << i
        lines.append((px, py, nx, ny, d))
    # two arcs (a jug's rim, a guitar's sound hole) cut facets too
    for i, (cx, cy, rad) in enumerate([(0.58, 0.42, 0.16), (0.36, 0.66, 0.09)]):
        bits |= (np.hypot(u - cx, v - cy) < rad).astype(np.int64) << (17 + i)
    uniq, inv = np.unique(bits, return_inverse=True)
    inv = inv.reshape(n, n)
    k = len(uniq)
    cols = palette("#c9a46a", "#7a5230", "#8a875c", "#5d6b74", "#e6dabf", "#2d2622",
                   "#4f6d8f", "#b5653c", "#a89a7c")
    choice = rng.choice(len(cols), size=k, p=[0.18, 0.15, 0.1, 0.13, 0.12, 0.08, 0.08, 0.08, 0.08])
    base = cols[choice] * (0.85 + 0.3 * rng.random((k, 1)))
    # every facet is shaded along its own direction, like planes turned to the light
    g = rng.normal(0, 1, (k, 2))
    t = u * g[inv, 0] + v * g[inv, 1]
    count = np.bincount(inv.ravel(), minlength=k)
    mean = np.bincount(inv.ravel(), weights=t.ravel(), minlength=k) / np.maximum(count, 1)
    shade = np.clip(1 + 1.6 * (t - mean[inv]), 0.55, 1.35)
    rgb = base[inv] * shade[..., None]
    # hatching in some facets
    hatch = rng.random(k) < 0.35
    ha = rng.uniform(0, math.pi, k)
    phase = (xx * np.cos(ha[inv]) + yy * np.sin(ha[inv])) / 5.0
    lines_mask = (np.sin(phase * 2 * math.pi) > 0.55) & hatch[inv]
    rgb *= np.where(lines_mask, 0.78, 1.0)[..., None]
    # dark contour segments along parts of the cutting lines
    ink = np.zeros((n, n), np.float32)
    for px, py, nx, ny, d in lines:
        s = (u - px) * -ny + (v - py) * nx
        s0 = rng.uniform(-0.6, 0.2)
        s1 = s0 + rng.uniform(0.2, 0.8)
        w = rng.uniform(0.8, 2.2)
        seg = smoothstep(w + 1, w, np.abs(d) * n) * ((s > s0) & (s < s1))
        ink = np.maximum(ink, seg)
    for cx, cy, rad in [(0.58, 0.42, 0.16), (0.36, 0.66, 0.09)]:
        ink = np.maximum(ink, smoothstep(2.6, 1.4, np.abs(np.hypot(u - cx, v - cy) - rad) * n))
    grain = 0.9 + 0.2 * fbm(rng, n, n, base=64, octaves=2)
    rgb = rgb * grain[..., None]
    rgb = rgb * (1 - 0.85 * ink[..., None])
    return to_image(rgb)


def render_color_fields(rng: Rng, n: int) -> Image.Image:
    """Rothko-like: soft-edged, scumbled slabs of glowing colour stacked on maroon canvas."""
    yy, xx = grid(n)
    u, v = xx / n, yy / n
    bg = palette("#4a1518")[0]
    rgb = bg * (0.8 + 0.4 * fbm(rng, n, n, base=3, octaves=5))[..., None] * np.ones(3)
    slabs = [(0.08, 0.92, 0.06, 0.43, "#e2672b"), (0.1, 0.9, 0.49, 0.55, "#b0302a"),
             (0.08, 0.92, 0.61, 0.94, "#e0a93a")]
    for x0, x1, y0, y1, hexc in slabs:
        edge = fbm(rng, n, n, base=6, octaves=4) - 0.5
        sd = np.minimum(np.minimum(u - x0, x1 - u), np.minimum(v - y0, y1 - v)) * n
        a = 1 / (1 + np.exp(-(sd + 18 * edge) / 4.0))
        streaks = fbm(rng, n, n, base=4, octaves=5, stretch=(3, 0.4))  # horizontal scumble
        scumble = fbm(rng, n, n, base=8, octaves=4)
        col = palette(hexc)[0] * (0.66 + 0.38 * streaks + 0.24 * scumble)[..., None]
        col = col * (1 - 0.35 * (1 - smoothstep(0, 40, sd)))[..., None]  # darker rim glow
        rgb = rgb * (1 - a[..., None]) + col * a[..., None]
    # translucent dry-brush strokes, drawn at twice the size
    s = 2 * n
    big = to_image(rgb).resize((s, s), Image.BICUBIC).convert("RGBA")
    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    base = to_array(to_image(rgb))
    for _ in range(2400):  # broad, mostly horizontal sweeps of thin paint
        x, y = rng.uniform(0, s), rng.uniform(0, s)
        c = base[min(int(y / 2), n - 1), min(int(x / 2), n - 1)]
        c = c * rng.uniform(0.7, 1.35)
        ang = rng.normal(0, 0.3) + (rng.choice([-0.8, 0.8]) if rng.random() < 0.15 else 0)
        ln = rng.uniform(40, 160)
        w = int(rng.integers(12, 44))
        x2, y2 = x + math.cos(ang) * ln, y + math.sin(ang) * ln
        alpha = int(rng.integers(18, 55))
        for b in range(w // 3):  # bristle lines with their own tone and length
            o = b * 3 - w / 2
            cb = rgb255(c * rng.uniform(0.8, 1.2))
            f = rng.uniform(0.6, 1.0)
            ox, oy = -math.sin(ang) * o, math.cos(ang) * o
            draw.line([(x + ox, y + oy), (x + (x2 - x) * f + ox, y + (y2 - y) * f + oy)],
                      fill=(*cb, alpha), width=3)
    layer = layer.filter(ImageFilter.GaussianBlur(0.8))
    out = Image.alpha_composite(big, layer).convert("RGB")
    out = to_array(downsample(out, n))
    weave = 1 + 0.05 * np.sin(xx * math.pi / 1.5) * np.sin(yy * math.pi / 1.5)  # canvas weave
    out *= (weave * (0.96 + 0.08 * rng.random((n, n))))[..., None]
    return to_image(out)


def render_waves(rng: Rng, n: int) -> Image.Image:
    """Woodblock-print waves: curling bands of indigo and foam with dark key lines."""
    yy, xx = grid(n)
    px, py = xx.copy(), yy.copy()
    # twirls curl the horizontal swell into breaking crests and eddies
    twirls = [(0.3, 0.38, 0.2, 3.2), (0.72, 0.3, 0.14, -2.6), (0.55, 0.7, 0.17, 2.8),
              (0.12, 0.8, 0.12, -2.2), (0.88, 0.72, 0.12, 2.4)]
    for _ in range(5):
        twirls.append((*rng.uniform(0.05, 0.95, 2), rng.uniform(0.05, 0.09),
                       rng.choice([-1, 1]) * rng.uniform(1.5, 2.5)))
    for cx, cy, rad, k in twirls:
        dx, dy = px - cx * n, py - cy * n
        a = k * np.exp(-((np.hypot(dx, dy) / (rad * n)) ** 2))
        ca, sa = np.cos(a), np.sin(a)
        px, py = cx * n + dx * ca - dy * sa, cy * n + dx * sa + dy * ca
    wobble = fbm(rng, n, n, base=4, octaves=4) - 0.5
    swell = 0.45 * np.sin(px / n * 2 * math.pi * 2.2) + 0.25 * np.sin(px / n * 2 * math.pi * 5.3)
    phase = py / n * 11 + swell + 1.2 * wobble
    frac = phase % 1.0
    bands = np.array([0.0, 0.32, 0.55, 0.72, 0.86, 1.0])
    cols = palette("#0b2545", "#1d4e89", "#3e7cb1", "#a9cfe0", "#f4f1e6")
    idx = np.clip(np.searchsorted(bands, frac, side="right") - 1, 0, 4)
    rgb = cols[idx] * (0.92 + 0.12 * fbm(rng, n, n, base=48, octaves=2))[..., None]
    # key lines at band borders with a constant pixel width: distance in phase / |grad phase|
    gy, gx = np.gradient(phase)
    gnorm = np.hypot(gx, gy) + 1e-6
    dist = np.min(np.abs(frac[..., None] - bands[None, None, 1:-1]), axis=-1)
    dist = np.minimum(dist, np.minimum(frac, 1 - frac)) / gnorm
    line = smoothstep(1.6, 0.6, dist)[..., None]
    rgb = rgb * (1 - line) + palette("#0a1730")[0] * line
    # foam: white dots flung off the crests, drawn at twice the size
    s = 2 * n
    img = to_image(rgb).resize((s, s), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(5000):
        x, y = rng.uniform(0, n - 1), rng.uniform(0, n - 1)
        f = frac[int(y), int(x)]
        if f > 0.8 and rng.random() < 0.7:
            rad = rng.uniform(1.5, 5.5)
            X, Y = 2 * x + rng.normal(0, 6), 2 * y - rng.uniform(0, 14)
            draw.ellipse([X - rad, Y - rad, X + rad, Y + rad], fill=(246, 243, 232),
                         outline=(14, 28, 60), width=1)
    out = to_array(downsample(img, n))
    paper = 0.95 + 0.1 * fbm(rng, n, n, base=96, octaves=2)
    return to_image(out * paper[..., None])


def render_starry_swirls(rng: Rng, n: int) -> Image.Image:
    """A swirling night sky of thick impasto dabs, haloed stars, a cypress and dark hills."""
    s = 2 * n
    yy, xx = grid(n)
    u, v = xx / n, yy / n
    # the sky's flow: a westward drift plus vortices (two great swirls, stars as small eddies)
    vx = 1.0 + 0.3 * np.sin(u * 2 * math.pi * 1.3 + v * 5)
    vy = 0.25 * np.sin(u * 2 * math.pi * 0.9 + 1)
    swirls = [(0.42, 0.34, 0.13, 2.6), (0.66, 0.3, 0.07, -1.6), (0.24, 0.16, 0.06, 1.2)]
    stars = [(0.08, 0.1), (0.2, 0.42), (0.34, 0.08), (0.55, 0.12), (0.62, 0.5), (0.78, 0.14),
             (0.9, 0.36), (0.5, 0.56), (0.12, 0.55)]
    for cx, cy, rad, strength in swirls + [(x, y, 0.035, 0.9) for x, y in stars]:
        dx, dy = u - cx, v - cy
        d2 = dx * dx + dy * dy + rad * rad
        vx += strength * -dy * rad / d2
        vy += strength * dx * rad / d2
    horizon = 0.7 + 0.05 * np.sin(u * 7 + 1) + 0.03 * noise1d(rng, n)[None, :]
    hills = v > horizon
    hill_angle = np.arctan2(np.gradient(horizon, axis=1) * 0.6, 1.0)
    angle = np.where(hills, hill_angle + 0.2 * np.sin(v * 40), np.arctan2(vy, vx))
    field = FlowField(angle, scale=2.0)
    cy_w = 0.2 + 0.8 * np.clip((v - 0.12) / 0.88, 0, 1) ** 0.7  # cypress half-width profile
    cypress = (np.abs(u - 0.16 - 0.02 * np.sin(v * 20)) < 0.085 * cy_w) & (v > 0.12)
    sky = ramp(v / 0.75, palette("#0b1a45", "#16306e", "#24468c"))
    sky = np.where(hills[..., None], ramp((v - 0.65) / 0.35, palette("#1a3560", "#0d1a33")), sky)
    img = to_image(sky * (0.85 + 0.3 * fbm(rng, n, n, base=4))[..., None]).resize((s, s))
    draw = ImageDraw.Draw(img)
    blues = palette("#1d3d8f", "#2e5caa", "#4a78c2", "#6fa0d8", "#17306a", "#3b66a8")
    lights = palette("#a8d0e6", "#dce9d0", "#f1e7a6", "#7fb6d9")
    swirl_d = np.min([np.hypot(u - cx, v - cy) / rad for cx, cy, rad, _ in swirls], axis=0)
    star_d = np.min([np.hypot(u - x, v - y) for x, y in stars], axis=0)

    def dab(pts: list[tuple[float, float]], c: Array, w: int) -> None:
        draw.line(pts, fill=rgb255(c * 0.55), width=w + 3, joint="curve")
        draw.line(pts, fill=rgb255(c), width=w, joint="curve")
        half = w / 2 - 1
        for b in range(-1, 2):  # a lighter and a darker bristle ridge inside the dab
            draw.line(offset_path(pts, b * half * 0.6), fill=rgb255(c * (1.0 + 0.12 * b)),
                      width=2, joint="curve")

    for _ in range(11000):  # sky
        x, y = rng.uniform(0, s), rng.uniform(0, s)
        i, j = min(int(y / 2), n - 1), min(int(x / 2), n - 1)
        if hills[i, j] or cypress[i, j]:
            continue
        ring = abs(math.sin(swirl_d[i, j] * 5.5))
        if swirl_d[i, j] < 1.6 and ring > 0.6 and rng.random() < 0.7:
            c = lights[rng.integers(0, len(lights))]
        elif star_d[i, j] < 0.06:
            c = palette("#f3d64a", "#fff1a8", "#f6e27a", "#b9d7e8")[rng.integers(0, 4)]
        else:
            c = blues[rng.integers(0, len(blues))]
        c = c * rng.uniform(0.9, 1.1)
        dab(field.trace(x, y, int(rng.integers(4, 9)), 4.0), c, int(rng.integers(6, 10)))
    for x, y in stars + [(0.86, 0.12)]:  # star and moon cores with a bright rim
        big = (x, y) == (0.86, 0.12)
        rad = (0.055 if big else 0.018 + 0.01 * rng.random()) * s
        X, Y = x * s, y * s
        draw.ellipse([X - rad * 1.5, Y - rad * 1.5, X + rad * 1.5, Y + rad * 1.5],
                     outline=(246, 226, 122), width=5)
        draw.ellipse([X - rad, Y - rad, X + rad, Y + rad], fill=(250, 224, 80))
        draw.ellipse([X - rad * 0.5, Y - rad * 0.5, X + rad * 0.5, Y + rad * 0.5],
                     fill=(255, 246, 200))
    hill_cols = palette("#142a55", "#1f3b6b", "#2a4f5e", "#0e1d3a", "#3a5a7a")
    for _ in range(3500):  # hills
        x, y = rng.uniform(0, s), rng.uniform(0, s)
        i, j = min(int(y / 2), n - 1), min(int(x / 2), n - 1)
        if not hills[i, j] or cypress[i, j]:
            continue
        c = hill_cols[rng.integers(0, len(hill_cols))] * rng.uniform(0.85, 1.15)
        dab(field.trace(x, y, int(rng.integers(4, 8)), 4.0), c, int(rng.integers(6, 9)))
    for _ in range(160):  # village lights
        x, y = rng.uniform(0.3, 0.95), rng.uniform(0.8, 0.95)
        X, Y = x * s, y * s
        draw.rectangle([X, Y, X + rng.uniform(4, 10), Y + rng.uniform(4, 8)],
                       fill=rgb255(palette("#e8c04a")[0] * rng.uniform(0.8, 1.1)))
    cyp_cols = palette("#0f1f14", "#1e3a1e", "#2d4a22", "#3b2a1a", "#0a120c")
    for _ in range(3000):  # cypress: flame-like upward strokes
        x, y = rng.uniform(s * 0.05, s * 0.28), rng.uniform(s * 0.1, s)
        i, j = min(int(y / 2), n - 1), min(int(x / 2), n - 1)
        if not cypress[i, j]:
            continue
        pts = [(x, y)]
        for k in range(int(rng.integers(5, 10))):
            a = -math.pi / 2 + 0.6 * math.sin(y / 23 + k * 0.7 + x / 31)
            x, y = x + math.cos(a) * 4, y + math.sin(a) * 4
            pts.append((x, y))
        c = cyp_cols[rng.integers(0, len(cyp_cols))] * rng.uniform(0.8, 1.3)
        dab(pts, c, int(rng.integers(6, 10)))
    return downsample(img, n)


def render_brushstrokes(rng: Rng, n: int) -> Image.Image:
    """Expressionist impasto: thick bristled strokes of vivid paint in three sizes, side-lit."""
    s = 2 * n
    hue = fbm(rng, n, n, base=2, octaves=4)
    light = fbm(rng, n, n, base=3, octaves=4)
    cols = palette("#1b3a6c", "#2e7d6b", "#8fb339", "#e3b23c", "#e0672b", "#c0272d", "#7b1f4b",
                   "#f1e4c3")
    zone = np.clip((hue * 1.15 - 0.075) * 7, 0, 6.99).astype(int)  # patches of one colour
    field_rgb = cols[zone] * (0.7 + 0.45 * light)[..., None]
    angle = (fbm(rng, n, n, base=2, octaves=3) * 2.5 + 0.3) * math.pi
    field = FlowField(angle, scale=2.0)
    under = Image.fromarray((np.clip(field_rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    img = under.resize((s, s), Image.BICUBIC).filter(ImageFilter.GaussianBlur(6))
    height = Image.new("L", (s, s), 128)
    draw, hdraw = ImageDraw.Draw(img), ImageDraw.Draw(height)
    passes = [(650, 28, 44, 14, 6.0), (1800, 14, 24, 10, 5.0), (2600, 6, 11, 7, 4.0)]
    for count, wmin, wmax, steps, step in passes:  # broad to fine
        for _ in range(count):
            x, y = rng.uniform(-20, s + 20), rng.uniform(-20, s + 20)
            c = field_rgb[min(max(int(y / 2), 0), n - 1), min(max(int(x / 2), 0), n - 1)]
            if rng.random() < 0.12:  # a stroke of another colour, loaded on the same brush
                c = 0.35 * c + 0.65 * cols[rng.integers(0, len(cols))]
            c = c * rng.uniform(0.85, 1.18) + rng.normal(0, 0.03, 3)
            w = int(rng.integers(wmin, wmax + 1))
            pts = field.trace(x, y, int(rng.integers(steps // 2, steps + 1)), step)
            draw.line(pts, fill=rgb255(c), width=w, joint="curve")
            hdraw.line(pts, fill=int(rng.integers(110, 150)), width=w, joint="curve")
            for b in range(max(1, w // 3)):  # bristle grooves and ridges
                o = (b + 0.5) * 3 - w / 2
                bp = offset_path(pts, o)[: max(2, len(pts) - int(rng.integers(0, 3)))]
                draw.line(bp, fill=rgb255(c * rng.uniform(0.85, 1.15)), width=2)
                hdraw.line(bp, fill=int(rng.integers(80, 200)), width=2)
    h = np.asarray(height.filter(ImageFilter.GaussianBlur(1.6)), np.float32) / 255
    gy, gx = np.gradient(h)
    shade = np.clip(1 + 10.0 * (-gx * 0.6 - gy * 0.8), 0.55, 1.5)
    rgb = to_array(img) * shade[..., None]
    return downsample(to_image(rgb), n)


def render_pointillism(rng: Rng, n: int) -> Image.Image:
    """Divisionist dots of pure colour building a sunny river bank (Seurat-like)."""
    s = 2 * n
    yy, xx = grid(n)
    u, v = xx / n, yy / n
    sky = ramp(v / 0.45, palette("#6fa6e0", "#a9c9ec", "#f3e3b3"))
    sun = np.exp(-(np.hypot(u - 0.72, v - 0.18) / 0.09) ** 2)
    scene = sky + sun[..., None] * (palette("#fff1b0")[0] - sky)
    ridge = 0.42 - 0.05 * noise1d(rng, n)[None, :] - 0.06 * np.exp(-((u - 0.25) / 0.12) ** 2)
    trees = (v > ridge) & (v < 0.5)
    tree_col = ramp(fbm(rng, n, n, base=8, octaves=3), palette("#1f4a2c", "#3a7040", "#6b8f3a"))
    scene = np.where(trees[..., None], tree_col, scene)
    bank = 0.62 + 0.1 * u - 0.04 * np.sin(u * 9)
    water = (v >= 0.5) & (v < bank)
    refl = ramp(fbm(rng, n, n, base=3, octaves=4, stretch=(0.25, 4)),
                palette("#2d6aa8", "#5b95cf", "#9ec3e6", "#f0dea0"))
    scene = np.where(water[..., None], refl, scene)
    grass = ramp(fbm(rng, n, n, base=5, octaves=4) * 0.7 + (v - bank) * 1.2,
                 palette("#9cbf4a", "#5f9a36", "#2f6b2a", "#1f4a22"))
    scene = np.where((v >= bank)[..., None], grass, scene)
    for cx, cy, rx, ry in [(0.12, 0.56, 0.1, 0.24), (0.88, 0.62, 0.08, 0.2)]:  # two trees
        blob = (((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 + 0.4 * fbm(rng, n, n, base=10)) < 1
        scene = np.where(blob[..., None], ramp(v, palette("#2b5e33", "#173d22")), scene)
    for cx, cy in [(0.45, 0.58), (0.62, 0.55)]:  # sails
        sail = (v < cy) & (v > cy - 0.12) & (np.abs(u - cx) < (v - cy + 0.12) * 0.35)
        scene = np.where(sail[..., None], palette("#f4f0e0")[0], scene)
    scene = to_array(to_image(scene).filter(ImageFilter.GaussianBlur(3)))
    img = Image.new("RGB", (s, s), (241, 234, 216))
    draw = ImageDraw.Draw(img)
    for count, rmin, rmax in [(5000, 8.0, 12.0), (9000, 5.5, 8.0), (12000, 3.5, 5.5)]:
        for _ in range(count):
            x, y = rng.uniform(0, s), rng.uniform(0, s)
            c = scene[min(int(y / 2), n - 1), min(int(x / 2), n - 1)].copy()
            p = rng.random()
            if p < 0.14:
                c = (c.max() + c.min() - c) * 0.9 + 0.1  # complementary accent
            elif p < 0.35:
                c = c + (1 - c) * 0.35  # lighter tint
            else:
                c = c[rng.permutation(3)] * 0.15 + c * 0.85 if p > 0.9 else c
            c = c * rng.uniform(0.9, 1.12)
            rad = rng.uniform(rmin, rmax)
            draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=rgb255(c))
    return downsample(img, n)


def render_pencil_sketch(rng: Rng, n: int) -> Image.Image:
    """Graphite still life: layered cross-hatching by tone, wobbly contours, paper grain."""
    s = 2 * n
    yy, xx = grid(n)
    u, v = xx / n, yy / n
    tone = 0.93 - 0.12 * u + 0.05 * v  # wall, lit from the left
    table = v > 0.66
    tone = np.where(table, 0.78 - 0.25 * (v - 0.66), tone)
    for cx, cy, rx, ry in [(0.38, 0.8, 0.2, 0.05), (0.74, 0.79, 0.16, 0.04)]:  # cast shadows
        d = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2
        tone = np.where(d < 1, tone * (0.45 + 0.3 * d), tone)
    light = np.array([-0.55, -0.6, 0.58])
    light /= np.linalg.norm(light)
    objects = [(0.33, 0.62, 0.17), (0.7, 0.66, 0.1)]  # spheres
    for cx, cy, rad in objects:
        dx, dy = (u - cx) / rad, (v - cy) / rad
        rr = dx * dx + dy * dy
        nz = np.sqrt(np.clip(1 - rr, 0, 1))
        lam = np.clip(dx * light[0] + dy * light[1] + nz * light[2], 0, 1)
        shaded = 0.1 + 0.85 * lam + 0.12 * smoothstep(0.6, 1.0, rr) * (dy > 0)  # reflected light
        tone = np.where(rr < 1, shaded, tone)
    # a box behind: three faces
    front = (u > 0.52) & (u < 0.82) & (v > 0.3) & (v < 0.56)
    side = (u >= 0.82) & (u < 0.9) & (v > 0.3 - (u - 0.82)) & (v < 0.56 - (u - 0.82))
    top = (v <= 0.3) & (v > 0.22) & (u > 0.52 + (0.3 - v)) & (u < 0.82 + (0.3 - v))
    tone = np.where(front, 0.6, np.where(side, 0.32, np.where(top, 0.88, tone)))
    mask_noise = fbm(rng, n, n, base=12, octaves=3) - 0.5
    tone_big = resize_f(tone + 0.08 * mask_noise, s, s)
    paper = np.ones((s, s), np.float32)
    layers = [(0.9, 40, 11), (0.72, -48, 10), (0.55, 5, 9), (0.38, 72, 8), (0.22, 25, 7)]
    diag = s * 1.5
    for thr, deg, spacing in layers:
        hatch = Image.new("L", (s, s), 255)
        draw = ImageDraw.Draw(hatch)
        a = math.radians(deg)
        dx, dy = math.cos(a), math.sin(a)
        off = -diag / 2
        while off < diag / 2:
            t = -diag / 2 + rng.uniform(0, 40)
            while t < diag / 2:
                ln = rng.uniform(40, 170)
                cx, cy = s / 2 - dy * off, s / 2 + dx * off
                j = rng.normal(0, 1.2, 3)
                p0 = (cx + dx * t + j[0], cy + dy * t + j[1])
                p1 = (cx + dx * (t + ln / 2) - dy * j[2], cy + dy * (t + ln / 2) + dx * j[2])
                p2 = (cx + dx * (t + ln), cy + dy * (t + ln))
                draw.line([p0, p1, p2], fill=int(rng.integers(40, 130)),
                          width=int(rng.choice([1, 2, 2, 3])))
                t += ln + rng.uniform(2, 25)
            off += spacing * rng.uniform(0.8, 1.2)
        m = smoothstep(thr, thr - 0.1, tone_big)
        paper *= 1 - m * (1 - np.asarray(hatch, np.float32) / 255) * 0.85
    img = Image.fromarray((paper * 255).astype(np.uint8), "L")
    draw = ImageDraw.Draw(img)
    for cx, cy, rad in objects:  # contours drawn two or three times, as a sketcher does
        for _ in range(3):
            X, Y = cx * s + rng.normal(0, 2), cy * s + rng.normal(0, 2)
            R = rad * s + rng.normal(0, 2)
            a0 = rng.uniform(0, 360)
            draw.arc([X - R, Y - R, X + R, Y + R], a0, a0 + rng.uniform(250, 370),
                     fill=int(rng.integers(30, 90)), width=int(rng.integers(2, 4)))
    box = [[(0.52, 0.3), (0.82, 0.3), (0.82, 0.56), (0.52, 0.56), (0.52, 0.3)],
           [(0.52, 0.3), (0.6, 0.22), (0.9, 0.22), (0.82, 0.3)],
           [(0.9, 0.22), (0.9, 0.48), (0.82, 0.56)], [(0.0, 0.66), (1.0, 0.66)]]
    for poly in box:
        for _ in range(2):
            pts = [(x * s + rng.normal(0, 1.5), y * s + rng.normal(0, 1.5)) for x, y in poly]
            draw.line(pts, fill=int(rng.integers(30, 90)), width=int(rng.integers(2, 4)))
    g = np.asarray(downsample(img, n), np.float32) / 255
    grain = 0.94 + 0.06 * fbm(rng, n, n, base=128, octaves=2)
    g = g * grain + 0.04 * (1 - g) * fbm(rng, n, n, base=6, octaves=3)  # graphite smudge
    warm = np.array([1.0, 0.975, 0.92])
    return to_image(g[..., None] * warm + (1 - g[..., None]) * np.array([0.02, 0.02, 0.05]))


def render_ink_wash(rng: Rng, n: int) -> Image.Image:
    """Sumi-e: misty ink-wash mountains, a dry-brush pine branch, a red sun and seal."""
    yy, xx = grid(n)
    u, v = xx / n, yy / n
    fibre = fbm(rng, n, n, base=40, octaves=2, stretch=(0.3, 3))
    paper = palette("#efe6d2")[0] * (0.95 + 0.07 * fibre + 0.04 * fbm(rng, n, n, base=3))[
        ..., None]
    sun = smoothstep(0.072, 0.066, np.hypot(u - 0.7, v - 0.2))
    red = palette("#c0392b")[0]
    paper = paper * (1 - 0.85 * sun[..., None]) + red * 0.85 * sun[..., None]
    dens_total = np.zeros((n, n), np.float32)
    layers = [(0.5, 0.26, 0.2, 0.2), (0.6, 0.24, 0.35, 0.16), (0.72, 0.2, 0.55, 0.12),
              (0.9, 0.14, 0.85, 0.09)]
    for base, amp, dk, fade in layers:  # far to near
        peaks = np.zeros(n)
        for _ in range(int(rng.integers(2, 4))):  # a few peaks, craggy at the top
            c, w = rng.uniform(-0.1, 1.1), rng.uniform(0.08, 0.25)
            peaks = np.maximum(peaks, rng.uniform(0.5, 1) * np.exp(-np.abs(u[0] - c) / w))
        crag = noise1d(rng, n, base=6, octaves=6)
        ridge = base - amp * (0.15 + 0.85 * peaks + 0.12 * crag)[None, :]
        t = (v - ridge) / fade
        texture = fbm(rng, n, n, base=6, octaves=5, stretch=(0.5, 2.5))  # texture strokes
        streak = fbm(rng, n, n, base=10, octaves=3, stretch=(4, 0.3))  # vertical cun strokes
        dens = np.where(t > 0, dk * np.exp(-t) * (0.55 + 0.6 * texture) * (0.7 + 0.5 * streak), 0)
        dens += dk * 0.9 * np.exp(-((v - ridge) * n / 2.0) ** 2) * (0.5 + texture)  # ridge line
        dens_total = 1 - (1 - dens_total) * (1 - np.clip(dens, 0, 1))
    dens_img = Image.fromarray((np.clip(dens_total, 0, 1) * 255).astype(np.uint8), "L")
    dens_total = np.asarray(dens_img.filter(ImageFilter.GaussianBlur(0.8)), np.float32) / 255
    # pine branch in dry brush, drawn at twice the size into an ink layer
    s = 2 * n
    ink = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(ink)
    x, y, a = -10.0, s * 0.18, 0.25
    branch = [(x, y)]
    for _ in range(48):
        a += rng.normal(0, 0.12)
        x, y = x + math.cos(a) * 14, y + math.sin(a) * 14
        branch.append((x, y))
    bristles = int(rng.integers(0, 2**31))
    for k in range(len(branch) - 1):  # bristles with gaps (the brush running dry)
        w = 44 * (1 - k / len(branch)) + 6
        brng = np.random.default_rng(bristles)  # the same bristles all along the stroke
        for b in range(int(w // 2)):
            dry = brng.random() < 0.25
            if rng.random() < 0.05 + (0.6 if dry else 0.15) * k / len(branch):
                continue
            o = b * 2 - w / 2
            (x0, y0), (x1, y1) = offset_path(branch[k : k + 2], o)
            draw.line([(x0, y0), (x1, y1)], fill=int(brng.integers(150, 256)), width=3)
        if k % 5 == 2:  # needle clusters: fans of tapering strokes
            bx, by = branch[k]
            for _ in range(34):
                na = rng.uniform(0, 2 * math.pi)
                ln = rng.uniform(30, 80)
                tone = int(rng.integers(120, 230))
                mid = (bx + math.cos(na) * ln / 2, by + math.sin(na) * ln / 2)
                draw.line([(bx, by), mid], fill=tone, width=4)
                draw.line([mid, (bx + math.cos(na) * ln, by + math.sin(na) * ln)], fill=tone,
                          width=2)
    for _ in range(60):  # splatter
        X, Y, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(1, 5)
        draw.ellipse([X - r, Y - r, X + r, Y + r], fill=int(rng.integers(90, 220)))
    ink_a = np.asarray(downsample(ink, n), np.float32) / 255
    dens_total = 1 - (1 - dens_total) * (1 - ink_a)
    black = palette("#15141a")[0]
    rgb = paper * (1 - dens_total[..., None]) + black * dens_total[..., None]
    # the artist's seal: a red square with carved white lines
    x0, y0, w = int(0.86 * n), int(0.86 * n), int(0.07 * n)
    seal = np.zeros((n, n), bool)
    seal[y0 : y0 + w, x0 : x0 + w] = True
    carve = ((np.abs((xx - x0) % (w / 3) - w / 6) < 1.2) & (yy > y0 + 4) & (yy < y0 + w - 4)) | (
        (np.abs(yy - y0 - w / 2) < 1.2) & (xx > x0 + 3) & (xx < x0 + w - 3))
    seal_col = palette("#b22a22")[0] * (0.85 + 0.3 * fbm(rng, n, n, base=60, octaves=2))[..., None]
    rgb = np.where((seal & ~carve)[..., None], seal_col, rgb)
    return to_image(rgb)


# --------------------------------------------------------------------------------------------
# registry, output
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleSpec:
    name: str
    description: str
    seed: int
    render: Callable[[Rng, int], Image.Image]
    fmt: str = "png"  # "png" for flat, graphic styles; "jpg" (quality 90) for painterly ones

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.fmt}"


STYLES: dict[str, StyleSpec] = {
    s.name: s
    for s in [
        StyleSpec("mosaic", "Irregular tesserae in dark grout forming a radial rosette with a "
                  "wave border", 1101, render_mosaic),
        StyleSpec("brushstrokes", "Thick expressionist impasto: bristled strokes of vivid "
                  "paint in three sizes", 1102, render_brushstrokes, "jpg"),
        StyleSpec("ink_wash", "Sumi-e ink wash: misty mountains, a dry-brush pine branch, a red "
                  "sun and seal", 1103, render_ink_wash, "jpg"),
        StyleSpec("pointillism", "Divisionist dots of pure and complementary colour (a sunny "
                  "river bank)", 1104, render_pointillism, "jpg"),
        StyleSpec("pencil_sketch", "Graphite still life in layered cross-hatching on grainy "
                  "paper", 1105, render_pencil_sketch, "jpg"),
        StyleSpec("color_fields", "Rothko-like glowing slabs of orange, red and ochre with "
                  "scumbled dry-brush edges", 1106, render_color_fields, "jpg"),
        StyleSpec("waves", "Woodblock-print water: curling, swirling indigo bands with foam "
                  "and dark key lines", 1107, render_waves),
        StyleSpec("stained_glass", "Backlit rose window of jewel-coloured glass between black "
                  "lead cames", 1108, render_stained_glass),
        StyleSpec("cubist", "Analytic-cubist shards of ochre, umber and slate with hatching "
                  "and broken contours", 1109, render_cubist),
        StyleSpec("starry_swirls", "Swirling night sky of impasto dabs with haloed stars, a "
                  "cypress and hills", 1110, render_starry_swirls, "jpg"),
    ]
}


def generate(name: str, size: int = SIZE) -> Image.Image:
    """Render one gallery style (deterministic: the same name and size give the same pixels)."""
    spec = STYLES[name]
    img = spec.render(np.random.default_rng(spec.seed), size)
    assert img.mode == "RGB" and img.size == (size, size), (name, img.mode, img.size)
    return img


def save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() == ".png":
        img.save(tmp, format="PNG", optimize=True)
    else:
        img.save(tmp, format="JPEG", quality=90, optimize=True, subsampling=0)
    tmp.replace(path)


def thumbnail(img: Image.Image, size: int = THUMB_SIZE) -> Image.Image:
    t = img.convert("RGB")
    t.thumbnail((size, size), Image.LANCZOS)
    return t


def write_gallery(out_dir: Path, names: Sequence[str] | None = None) -> list[Path]:
    """Render `names` (default: all) into out_dir with thumbs/ and merge styles.json."""
    names = list(names or STYLES)
    unknown = [n for n in names if n not in STYLES]
    if unknown:
        raise SystemExit(f"unknown style(s) {unknown}; known: {', '.join(STYLES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / "styles.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    written = []
    for name in names:
        spec = STYLES[name]
        img = generate(name)
        for stale in out_dir.glob(f"{name}.*"):  # the format may have changed
            if stale.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"}:
                stale.unlink()
        save(img, out_dir / spec.filename)
        save(thumbnail(img), out_dir / "thumbs" / f"{name}.jpg")
        index[name] = {"description": spec.description, "file": spec.filename}
        written.append(out_dir / spec.filename)
        print(f"{spec.filename:22s} {(out_dir / spec.filename).stat().st_size / 1024:6.0f} KiB")
    tmp = index_path.with_name(".styles.json.tmp")
    tmp.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    tmp.replace(index_path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="gallery folder (default: styles/)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"some of: {', '.join(STYLES)}")
    args = parser.parse_args(argv)
    write_gallery(args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
