"""Content, style and total-variation losses, and the layers and weights they use.

Style statistics are always computed in fp32 (bf16 Gram sums lose most of their mantissa).
Every term uses a *scaled* squared error, sum(d²)/sum(|d|) (as crowsonkb/style-transfer-pytorch
does): it is homogeneous of degree one in the activations and independent of their count, so a
weight means the same at 128 px as at 2048 px and for a 64-channel layer as for a 512-channel one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

StyleStat = Literal["gram", "meancov"]

CONTENT_LAYERS = ["relu4_2"]
STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
# Shallow layers weigh more: deep Grams are larger and would otherwise drown the fine texture.
_RAW_STYLE_WEIGHTS = [256.0, 64.0, 16.0, 4.0, 1.0]
STYLE_LAYER_WEIGHTS = {
    name: w / sum(_RAW_STYLE_WEIGHTS)
    for name, w in zip(STYLE_LAYERS, _RAW_STYLE_WEIGHTS, strict=True)
}

# What StyleParams' weights of 1.0 mean: crowsonkb's defaults, which balance the three terms.
CONTENT_BASE = 0.015
STYLE_BASE = 1.0
TV_BASE = 2.0

EPS = 1e-8


def scaled_mse(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    diff = x - target
    return diff.pow(2).sum() / diff.abs().sum().add(EPS)


def _positions(features: torch.Tensor) -> torch.Tensor:
    """N×C×H×W activation -> (N·H·W)×C fp32 matrix, one row per position.

    With channels-last activations (the engine's layout) the permute+reshape is a free view;
    the C×HW layout would copy the largest activation every step.
    """
    c = features.shape[1]
    return features.permute(0, 2, 3, 1).reshape(-1, c).float()


def gram(features: torch.Tensor) -> torch.Tensor:
    """C×C Gram matrix normalised by the number of positions."""
    f = _positions(features)
    return f.T @ f / f.shape[0]


def mean_cov(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = _positions(features)
    mean = f.mean(dim=0)
    centred = f - mean
    return mean, centred.T @ centred / f.shape[0]


StyleTarget = dict[str, tuple[torch.Tensor, ...]]  # layer -> (gram,) or (mean, cov)


def style_statistics(features: dict[str, torch.Tensor], stat: StyleStat) -> StyleTarget:
    if stat == "gram":
        return {name: (gram(features[name]),) for name in STYLE_LAYERS}
    return {name: mean_cov(features[name]) for name in STYLE_LAYERS}


def blend_targets(targets: Sequence[StyleTarget], weights: Sequence[float]) -> StyleTarget:
    """Weighted average of several styles' statistics (weights normalised to sum to one)."""
    total = float(sum(weights))
    norm = [w / total for w in weights]
    out: StyleTarget = {}
    for name in targets[0]:
        parts = len(targets[0][name])
        out[name] = tuple(
            sum(w * t[name][i] for w, t in zip(norm, targets, strict=True)) for i in range(parts)
        )  # type: ignore[misc]
    return out


def style_loss(
    features: dict[str, torch.Tensor], target: StyleTarget, stat: StyleStat
) -> torch.Tensor:
    current = style_statistics(features, stat)
    loss = torch.zeros((), device=next(iter(target.values()))[0].device)
    for name, weight in STYLE_LAYER_WEIGHTS.items():
        for value, goal in zip(current[name], target[name], strict=True):
            loss = loss + weight * scaled_mse(value, goal)
    return loss


def content_loss(
    features: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> torch.Tensor:
    losses = [scaled_mse(features[n].float(), target[n]) for n in CONTENT_LAYERS]
    return torch.stack(losses).sum()


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (a mean, so size-independent)."""
    padded = torch.nn.functional.pad(image, (0, 1, 0, 1), mode="replicate")
    dx = padded[..., :-1, 1:] - padded[..., :-1, :-1]
    dy = padded[..., 1:, :-1] - padded[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).mean()


@dataclass
class LossWeights:
    content: float
    style: float
    tv: float

    @classmethod
    def from_strengths(cls, content: float, style: float, tv: float) -> LossWeights:
        return cls(CONTENT_BASE * content, STYLE_BASE * style, TV_BASE * tv)


def total_loss(
    features: dict[str, torch.Tensor],
    image: torch.Tensor,
    content_target: dict[str, torch.Tensor],
    style_target: StyleTarget,
    stat: StyleStat,
    weights: LossWeights,
) -> torch.Tensor:
    loss = weights.style * style_loss(features, style_target, stat)
    if weights.content:
        loss = loss + weights.content * content_loss(features, content_target)
    if weights.tv:
        loss = loss + weights.tv * tv_loss(image.float())
    return loss
