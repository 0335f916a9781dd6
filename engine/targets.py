"""Style statistics of a style image at one size, computed once and kept in a bounded LRU cache.

Many jobs share a gallery style, and every job needs its statistics at each of its scales: the
cache turns those forward passes into lookups.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch

from engine.backbone import VGGFeatures
from engine.device import Precision, autocast
from engine.losses import STYLE_LAYERS, StyleStat, StyleTarget, style_statistics

CACHE_SIZE = 64  # entries; one is at most ~1.4 MB (five Grams up to 512×512 fp32)

_cache: OrderedDict[tuple, StyleTarget] = OrderedDict()
_lock = threading.Lock()
stats = {"hits": 0, "misses": 0}


def fingerprint(image: torch.Tensor) -> str:
    """Identity of the exact pixels the network sees (after resizing/colour handling)."""
    t = image.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha1(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


def style_target(
    model: VGGFeatures,
    backbone_key: str,
    image: torch.Tensor,
    stat: StyleStat,
    precision: Precision,
) -> StyleTarget:
    """Statistics of `image` (1×3×H×W in [0, 1], on the model's device) at every style layer."""
    key = (fingerprint(image), backbone_key, stat, precision.label, str(image.device))
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            stats["hits"] += 1
            return hit
    if precision.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(image.device, precision):
        features = model(image, STYLE_LAYERS)
    target = style_statistics(features, stat)
    with _lock:
        stats["misses"] += 1
        _cache[key] = target
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return target


def clear_cache() -> None:
    with _lock:
        _cache.clear()
