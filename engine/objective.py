"""What one job optimises: its targets at each scale, the image parameterisation, the loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from engine import targets
from engine.backbone import VGGFeatures
from engine.device import Precision, autocast
from engine.losses import (
    CONTENT_LAYERS,
    STYLE_LAYERS,
    LossWeights,
    StyleTarget,
    blend_targets,
    total_loss,
)
from engine.params import StyleParams
from engine.schedule import Scale
from engine.tensors import gray_like, resize, rgb_to_yiq, size_for, to_tensor, yiq_to_rgb


@dataclass
class ScaleTargets:
    """What one scale optimises against: fixed for all its steps."""

    content: torch.Tensor  # 1×3×h×w
    content_target: dict[str, torch.Tensor]
    style_target: StyleTarget
    chroma: torch.Tensor | None  # 1×2×h×w content I/Q when preserving colours


class Objective:
    """Content/style/TV loss of a job, in the space the optimiser moves in.

    That space is RGB, or, when preserving colours, luminance alone: the content's chroma is
    held fixed, so the output's chroma is the content's by construction.
    """

    def __init__(
        self,
        content: Image.Image,
        styles: Sequence[Image.Image],
        params: StyleParams,
        model: VGGFeatures,
        backbone_key: str,
        device: torch.device,
        precision: Precision,
        content_gain: float = 1.0,
    ) -> None:
        self.content = content
        self.styles = list(styles)
        self.params = params
        self.model = model
        self.backbone_key = backbone_key
        self.device = device
        self.precision = precision
        self.weights = LossWeights.from_strengths(
            params.content_weight * content_gain, params.style_weight, params.tv_weight
        )
        self.blend = params.style_blend or [1.0] * len(self.styles)
        self.layers = sorted(set(CONTENT_LAYERS + STYLE_LAYERS))

    def targets(self, scale: Scale) -> ScaleTargets:
        size = (scale.width, scale.height)
        content = to_tensor(resize(self.content, size), self.device)
        with torch.no_grad(), autocast(self.device, self.precision):
            feats = self.model(self._layout(content), CONTENT_LAYERS)
        content_target = {k: v.float() for k, v in feats.items()}
        # The style is resized with the scale, so its texture keeps the same size relative to
        # the output at every scale.
        style_edge = max(16, round(scale.long_edge * self.params.style_scale))
        per_style = []
        for style in self.styles:
            s = to_tensor(resize(style, size_for(*style.size, style_edge)), self.device)
            if self.params.preserve_colors:
                s = gray_like(s, content)
            per_style.append(
                targets.style_target(
                    self.model, self.backbone_key, s, self.params.style_stat, self.precision
                )
            )
        style_target = per_style[0] if len(per_style) == 1 else blend_targets(per_style, self.blend)
        chroma = rgb_to_yiq(content)[:, 1:] if self.params.preserve_colors else None
        return ScaleTargets(content, content_target, style_target, chroma)

    def initial(self, t: ScaleTargets) -> torch.Tensor:
        """The first scale's starting point, in optimisation space."""
        if self.params.init == "random":
            gen = torch.Generator().manual_seed(self.params.seed)
            channels = 1 if t.chroma is not None else 3
            shape = (1, channels, *t.content.shape[-2:])
            return torch.rand(shape, generator=gen).to(self.device)
        if t.chroma is not None:
            return rgb_to_yiq(t.content)[:, :1].clamp(0, 1)
        return t.content.clone()

    def render(self, x: torch.Tensor, t: ScaleTargets) -> torch.Tensor:
        """Optimisation space -> RGB."""
        if t.chroma is None:
            return x
        return yiq_to_rgb(torch.cat([x, t.chroma], dim=1))

    def _layout(self, image: torch.Tensor) -> torch.Tensor:
        if self.precision.channels_last:
            return image.contiguous(memory_format=torch.channels_last)
        return image

    def loss(self, x: torch.Tensor, t: ScaleTargets) -> torch.Tensor:
        image = self.render(x, t)
        with autocast(self.device, self.precision):
            feats = self.model(self._layout(image), self.layers)
        # Outside autocast: the statistics and losses run in fp32.
        return total_loss(
            feats, image, t.content_target, t.style_target, self.params.style_stat, self.weights
        )

    def closure(
        self, optimizer: torch.optim.Optimizer, x: torch.Tensor, t: ScaleTargets
    ) -> Callable[[], torch.Tensor]:
        def evaluate() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss(x, t)
            loss.backward()
            return loss

        return evaluate
