"""Scores of a result against its photo and style, independent of the loss that made it.

Used by the quality tests and bench/quality.py. `structure` and `colour_distance` need no
network; `Scorer` measures feature distances with one fixed backbone, in fp32, with plain
(unscaled) mean squared errors, so the engine's and a baseline's results are judged alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from engine.backbone import VGGFeatures
from engine.losses import gram
from engine.tensors import resize, to_tensor

# Shallow layers carry colour and texture; relu4_2 the arrangement of the scene (Gatys et al.).
SCORE_STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1"]
SCORE_CONTENT_LAYER = "relu4_2"


def _tensor(image: Image.Image | torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        if size is not None and tuple(t.shape[-2:]) != (size[1], size[0]):
            t = F.interpolate(t, size=(size[1], size[0]), mode="area")
        return t
    if size is not None and image.size != size:
        image = resize(image, size)
    return to_tensor(image, torch.device("cpu"))


def _luminance(t: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (t * weights).sum(dim=1, keepdim=True)


def _gradient_magnitude(t: torch.Tensor) -> torch.Tensor:
    y = _luminance(t)
    # Blurred by averaging 2x2 first: structure is the scene's edges, not the style's fine grain.
    y = F.avg_pool2d(y, 2)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T]).unsqueeze(1)
    g = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(dim=1).sqrt()


def structure(result: Image.Image | torch.Tensor, photo: Image.Image | torch.Tensor) -> float:
    """Pearson correlation of luminance-gradient magnitudes: 1 for the photo itself, about 0
    for a picture that kept nothing of its edges."""
    r = _tensor(result)
    p = _tensor(photo, (r.shape[-1], r.shape[-2]))
    a = _gradient_magnitude(r).flatten()
    b = _gradient_magnitude(p).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm() + 1e-12))


def _colour_stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = t.permute(0, 2, 3, 1).reshape(-1, 3).double()
    mean = pixels.mean(dim=0)
    centred = pixels - mean
    return mean, centred.T @ centred / pixels.shape[0]


def _sqrtm(m: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(m)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def colour_distance(a: Image.Image | torch.Tensor, b: Image.Image | torch.Tensor) -> float:
    """Fréchet distance between the RGB distributions (mean and covariance) of two images."""
    ma, ca = _colour_stats(_tensor(a))
    mb, cb = _colour_stats(_tensor(b))
    root = _sqrtm(ca)
    cross = _sqrtm(root @ cb @ root)
    d2 = (ma - mb).pow(2).sum() + torch.trace(ca + cb - 2 * cross)
    return float(d2.clamp(min=0).sqrt())


def _relative(value: torch.Tensor, target: torch.Tensor) -> float:
    return float((value - target).norm() / (target.norm() + 1e-12))


@dataclass(frozen=True)
class Score:
    # Relative distances (|a - b| / |b|, Frobenius), so layers and backbones weigh alike.
    style: float  # to the style's Grams at SCORE_STYLE_LAYERS, averaged (lower is better)
    content: float  # to the photo's features at SCORE_CONTENT_LAYER (lower is better)


class Scorer:
    """Feature distances with one model, in fp32, at the result's size."""

    def __init__(self, model: VGGFeatures, photo: Image.Image, style: Image.Image, size: int):
        self.model = model  # fp32 (no autocast here), shared with the engine's cache: not moved
        w, h = photo.size
        s = size / max(w, h)
        self.size = (max(1, round(w * s)), max(1, round(h * s)))
        self.style_edge = size
        with torch.no_grad():
            content = self._features(_tensor(photo, self.size), [SCORE_CONTENT_LAYER])
            sw, sh = style.size
            ss = size / max(sw, sh)
            style_size = (max(1, round(sw * ss)), max(1, round(sh * ss)))
            style_feats = self._features(_tensor(style, style_size), SCORE_STYLE_LAYERS)
        self.content = content[SCORE_CONTENT_LAYER]
        self.grams = {name: gram(style_feats[name]) for name in SCORE_STYLE_LAYERS}

    def _features(self, t: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        device = next(self.model.parameters()).device
        return {k: v.float().cpu() for k, v in self.model(t.to(device), layers).items()}

    def __call__(self, result: Image.Image | torch.Tensor) -> Score:
        with torch.no_grad():
            feats = self._features(
                _tensor(result, self.size), [*SCORE_STYLE_LAYERS, SCORE_CONTENT_LAYER]
            )
        style = sum(_relative(gram(feats[n]), self.grams[n]) for n in self.grams) / len(self.grams)
        content = _relative(feats[SCORE_CONTENT_LAYER], self.content)
        return Score(style=style, content=content)
