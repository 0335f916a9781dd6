"""The coarse-to-fine plan: which sizes the image is optimised at and for how many steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.params import StyleParams
from engine.tensors import size_for

# Steps at the final scale when StyleParams.iterations is None. Sized so that a 256 px job
# takes about two minutes on a 2-core CPU (bench/RESULTS.md); early stopping often ends sooner.
DEFAULT_ITERATIONS = 200
# Coarser scales are cheap and do most of the work of placing the style: they get up to this
# many times the final scale's steps.
MAX_COARSE_FACTOR = 2.0
SCALE_STEP = math.sqrt(2)


@dataclass(frozen=True)
class Scale:
    width: int
    height: int
    steps: int

    @property
    def long_edge(self) -> int:
        return max(self.width, self.height)


def scale_edges(size: int, min_size: int) -> list[int]:
    """Long edges from `min_size` up by √2 to `size`; the last is always `size` itself."""
    if size <= min_size:
        return [size]
    edges = []
    edge = float(min_size)
    while edge * 1.05 < size:  # a scale within 5% of the target would be wasted work
        edges.append(round(edge))
        edge *= SCALE_STEP
    return edges + [size]


def plan(content_size: tuple[int, int], params: StyleParams) -> list[Scale]:
    assert params.size is not None, "stylize() resolves the device's default size first"
    iterations = params.iterations or DEFAULT_ITERATIONS
    width, height = content_size
    scales = []
    for edge in scale_edges(params.size, params.min_size):
        factor = min(MAX_COARSE_FACTOR, math.sqrt(params.size / edge))
        w, h = size_for(width, height, edge)
        scales.append(Scale(w, h, max(1, round(iterations * factor))))
    return scales
