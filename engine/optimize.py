"""`stylize`: coarse-to-fine optimisation of an image against content and style targets."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from engine import targets
from engine.backbone import BackboneMode, VGGFeatures, load_backbone
from engine.device import (
    Precision,
    autocast,
    check_fits,
    configure_backends,
    describe,
    pick_device,
    pick_precision,
)
from engine.losses import (
    CONTENT_LAYERS,
    STYLE_LAYERS,
    LossWeights,
    StyleTarget,
    blend_targets,
    total_loss,
)
from engine.params import STOP, Progress, ProgressCallback, StyleParams, StyleResult
from engine.schedule import Scale, plan
from engine.state import EMA, RunState, parse
from engine.tensors import gray_like, resize, rgb_to_yiq, size_for, to_image, to_tensor, yiq_to_rgb
from engine.versions import versions

ADAM_LR = 0.02  # per step, in 0..1 pixel units
EMA_DECAY = 0.99
LBFGS_HISTORY = 20
# A scale is done when its loss fell by less than CONVERGE_TOL (relative) from one window of
# CONVERGE_WINDOW steps to the next; checked before each step so a resumed run decides the same.
CONVERGE_WINDOW = 25
CONVERGE_TOL = 1e-3


@dataclass
class _ScaleSetup:
    """What one scale optimises against: fixed for all its steps."""

    content: torch.Tensor  # 1×3×h×w
    content_target: dict[str, torch.Tensor]
    style_target: StyleTarget
    chroma: torch.Tensor | None  # 1×2×h×w content I/Q when preserving colours


def _inputs_id(content: Image.Image, styles: Sequence[Image.Image]) -> str:
    h = hashlib.sha1()
    for image in (content, *styles):
        h.update(f"{image.mode}{image.size}".encode())
        h.update(image.tobytes())
    return h.hexdigest()


def _converged(losses: list[float]) -> bool:
    w = CONVERGE_WINDOW
    if len(losses) < 2 * w:
        return False
    prev = sum(losses[-2 * w : -w]) / w
    recent = sum(losses[-w:]) / w
    # abs(): a loss already at (nearly) zero has nothing left to gain either.
    return prev - recent < CONVERGE_TOL * max(abs(prev), 1e-12)


class _Run:
    def __init__(
        self,
        content: Image.Image,
        styles: Sequence[Image.Image],
        params: StyleParams,
        model: VGGFeatures,
        backbone_key: str,
        device: torch.device,
        precision: Precision,
    ) -> None:
        self.content = content
        self.styles = styles
        self.params = params
        self.model = model
        self.backbone_key = backbone_key
        self.device = device
        self.precision = precision
        self.weights = LossWeights.from_strengths(
            params.content_weight, params.style_weight, params.tv_weight
        )
        self.blend = params.style_blend or [1.0] * len(styles)
        self.layers = sorted(set(CONTENT_LAYERS + STYLE_LAYERS))

    # --- per-scale setup ----------------------------------------------------------------------

    def setup(self, scale: Scale) -> _ScaleSetup:
        size = (scale.width, scale.height)
        content = to_tensor(resize(self.content, size), self.device)
        with torch.no_grad(), autocast(self.device, self.precision):
            feats = self.model(self._layout(content), CONTENT_LAYERS)
        content_target = {k: v.float() for k, v in feats.items()}
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
        return _ScaleSetup(content, content_target, style_target, chroma)

    def initial(self, setup: _ScaleSetup) -> torch.Tensor:
        """The first scale's starting image, in optimisation space."""
        if self.params.init == "random":
            gen = torch.Generator().manual_seed(self.params.seed)
            channels = 1 if setup.chroma is not None else 3
            shape = (1, channels, *setup.content.shape[-2:])
            return torch.rand(shape, generator=gen).to(self.device)
        if setup.chroma is not None:
            return rgb_to_yiq(setup.content)[:, :1].clamp(0, 1)
        return setup.content.clone()

    # --- the image ----------------------------------------------------------------------------

    def render(self, x: torch.Tensor, setup: _ScaleSetup) -> torch.Tensor:
        """Optimisation space -> RGB. Preserving colours, only luminance is free."""
        if setup.chroma is None:
            return x
        return yiq_to_rgb(torch.cat([x, setup.chroma], dim=1))

    def _layout(self, image: torch.Tensor) -> torch.Tensor:
        if self.precision.channels_last:
            return image.contiguous(memory_format=torch.channels_last)
        return image

    def loss(self, x: torch.Tensor, setup: _ScaleSetup) -> torch.Tensor:
        image = self.render(x, setup)
        with autocast(self.device, self.precision):
            feats = self.model(self._layout(image), self.layers)
        return total_loss(
            feats,
            image,
            setup.content_target,
            setup.style_target,
            self.params.style_stat,
            self.weights,
        )

    def closure(
        self, optimizer: torch.optim.Optimizer, x: torch.Tensor, setup: _ScaleSetup
    ) -> Callable[[], torch.Tensor]:
        def evaluate() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss(x, setup)
            loss.backward()
            return loss

        return evaluate

    def make_optimizer(self, x: torch.Tensor) -> torch.optim.Optimizer:
        if self.params.optimizer == "lbfgs":
            return torch.optim.LBFGS(
                [x], lr=1.0, max_iter=1, history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe"
            )
        return torch.optim.Adam([x], lr=ADAM_LR)

    def current(self, x: torch.Tensor, ema: EMA) -> torch.Tensor:
        """The run's image so far, in optimisation space.

        Adam's iterates jitter around the optimum; their average is the better image.
        L-BFGS's last iterate is its best.
        """
        return (ema.get() if self.params.optimizer == "adam" else x).detach()

    def output(self, x: torch.Tensor, ema: EMA, setup: _ScaleSetup) -> torch.Tensor:
        return self.render(self.current(x, ema), setup).clamp(0, 1)


def _upsample(x: torch.Tensor, scale: Scale) -> torch.Tensor:
    y = F.interpolate(x, size=(scale.height, scale.width), mode="bicubic", align_corners=False)
    return y.clamp(0, 1)


def _final_image(rgb: torch.Tensor, final: Scale) -> Image.Image:
    """Always the requested size, even when a cancelled run stopped at a coarser scale."""
    image = to_image(rgb)
    return resize(image, (final.width, final.height))


def stylize(
    content: Image.Image,
    styles: Sequence[Image.Image],
    params: StyleParams,
    *,
    device: str = "auto",
    backbone: BackboneMode = "auto",
    weights: str | Path | None = None,
    callback: ProgressCallback | None = None,
    resume: dict[str, Any] | None = None,
) -> StyleResult:
    """Render `content` in the style of `styles` (blended by `params.style_blend`).

    `callback(Progress)` runs after every step; returning STOP ends the run with the image so
    far (at the requested size). `resume` takes a `Progress.checkpoint()` dict of the same job
    and continues from it. Raises ParamError (bad parameters, size too big for memory, a
    checkpoint of another job) and BackboneError (`vgg19` without weights).
    """
    started = time.perf_counter()
    styles = list(styles)
    params.validate(len(styles))
    dev = pick_device(device)
    configure_backends(dev)
    precision = pick_precision(dev)
    scales = plan(content.size, params)
    final = scales[-1]
    style_edge = round(final.long_edge * params.style_scale)
    style_pixels = max(w * h for w, h in (size_for(*s.size, style_edge) for s in styles))
    check_fits(final.width, final.height, dev, precision, style_pixels)
    bb = load_backbone(backbone, weights=weights, pooling=params.pooling, device=dev)
    if precision.channels_last:
        bb.model.to(memory_format=torch.channels_last)  # idempotent; the cached model is shared
    backbone_key = f"{bb.label}|{weights or ''}|{params.pooling}"
    run = _Run(content, styles, params, bb.model, backbone_key, dev, precision)

    inputs_id: str | None = None

    def inputs() -> str:
        nonlocal inputs_id
        if inputs_id is None:
            inputs_id = _inputs_id(content, styles)
        return inputs_id

    state = parse(resume, params, inputs(), bb.label) if resume is not None else None
    resumed_from = state.step if state else 0
    prior_elapsed = state.elapsed_s if state else 0.0
    planned = sum(s.steps for s in scales)
    step = state.step if state else 0
    skipped = state.skipped_steps if state else 0
    last_loss = float("nan")
    stopped = "done"
    x: torch.Tensor | None = None
    rgb: torch.Tensor | None = None

    def elapsed() -> float:
        return prior_elapsed + time.perf_counter() - started

    first_scale = state.scale_index if state else 0
    for index in range(first_scale, len(scales)):
        scale = scales[index]
        setup = run.setup(scale)
        if state is not None and index == state.scale_index:
            x = state.image.to(dev).requires_grad_(True)
            ema = EMA.from_state(state.ema, dev)
            optimizer = run.make_optimizer(x)
            optimizer.load_state_dict(state.optimizer)
            losses = list(state.losses)
            step_in_scale = state.step_in_scale
        else:
            start = run.initial(setup) if x is None else _upsample(run.current(x, ema), scale)
            x = start.detach().clone().requires_grad_(True)
            ema = EMA(x, EMA_DECAY)
            optimizer = run.make_optimizer(x)
            losses = []
            step_in_scale = 0

        closure = run.closure(optimizer, x, setup)
        while step_in_scale < scale.steps:
            if _converged(losses):
                skipped += scale.steps - step_in_scale
                if index == len(scales) - 1:
                    stopped = "converged"
                break
            loss = optimizer.step(closure)
            with torch.no_grad():
                x.clamp_(0, 1)
            ema.update(x)
            last_loss = float(loss.detach())
            losses.append(last_loss)
            step_in_scale += 1
            step += 1
            if callback is None:
                continue
            snapshot = _snapshot(
                run,
                x,
                ema,
                setup,
                optimizer,
                index,
                step_in_scale,
                step,
                losses,
                elapsed,
                skipped,
                params,
                inputs,
                bb.label,
            )
            progress = Progress(
                scale=index,
                n_scales=len(scales),
                step=step,
                total_steps=planned - skipped,
                loss=last_loss,
                elapsed_s=elapsed(),
                preview=snapshot[0],
                checkpoint=snapshot[1],
            )
            if callback(progress) is STOP:
                stopped = "cancelled"
                break
        rgb = run.output(x, ema, setup)
        if stopped == "cancelled":
            break

    assert rgb is not None
    return StyleResult(
        image=_final_image(rgb, final),
        params=params,
        backbone=bb.label,
        device=describe(dev),
        steps=step,
        total_steps=planned - skipped,
        seconds=elapsed(),
        final_loss=last_loss,
        stopped=stopped,  # type: ignore[arg-type]
        resumed_from_step=resumed_from,
        versions={**versions(), "precision": precision.label},
    )


def _snapshot(
    run: _Run,
    x: torch.Tensor,
    ema: EMA,
    setup: _ScaleSetup,
    optimizer: torch.optim.Optimizer,
    index: int,
    step_in_scale: int,
    step: int,
    losses: list[float],
    elapsed: Callable[[], float],
    skipped: int,
    params: StyleParams,
    inputs: Callable[[], str],
    label: str,
) -> tuple[Callable[[], Image.Image], Callable[[], dict[str, Any]]]:
    """Lazy preview and checkpoint of the state right now (both copy off the device)."""

    def preview() -> Image.Image:
        return to_image(run.output(x, ema, setup))

    def checkpoint() -> dict[str, Any]:
        state = RunState(
            scale_index=index,
            step_in_scale=step_in_scale,
            step=step,
            image=x.detach(),
            ema=ema.state(),
            optimizer=optimizer.state_dict(),
            losses=losses[-2 * CONVERGE_WINDOW :],
            elapsed_s=elapsed(),
            skipped_steps=skipped,
        )
        return state.to_dict(params, inputs(), label)

    return preview, checkpoint
