"""`stylize`: coarse-to-fine optimisation of an image against content and style targets."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from engine.backbone import load_backbone
from engine.device import (
    Precision,
    check_fits,
    configure_backends,
    default_size,
    device_name,
    pick_device,
    pick_precision,
)
from engine.objective import Objective, ScaleTargets
from engine.params import (
    STOP,
    BackboneMode,
    Progress,
    ProgressCallback,
    StyleParams,
    StyleResult,
)
from engine.schedule import Scale, plan
from engine.state import EMA, RunState, parse
from engine.tensors import resize, size_for, to_image
from engine.versions import versions

ADAM_LR = 0.02  # per step, in 0..1 pixel units
EMA_DECAY = 0.99
LBFGS_HISTORY = 20
# A scale is done when its loss fell by less than CONVERGE_TOL (relative) from one window of
# CONVERGE_WINDOW steps to the next; checked before each step so a resumed run decides the same.
CONVERGE_WINDOW = 25
CONVERGE_TOL = 1e-3


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


def _make_optimizer(kind: str, x: torch.Tensor) -> torch.optim.Optimizer:
    if kind == "lbfgs":
        # One iteration per step() so that steps, progress and checkpoints line up with
        # Adam's; the history carries over between calls in the optimizer's state.
        return torch.optim.LBFGS(
            [x], lr=1.0, max_iter=1, history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe"
        )
    return torch.optim.Adam([x], lr=ADAM_LR)


def _upsample(x: torch.Tensor, scale: Scale) -> torch.Tensor:
    y = F.interpolate(x, size=(scale.height, scale.width), mode="bicubic", align_corners=False)
    return y.clamp(0, 1)


@dataclass
class _ScaleRun:
    """One scale's optimisation: what carries from step to step, and what a checkpoint saves."""

    index: int
    targets: ScaleTargets
    x: torch.Tensor  # the image being optimised (requires grad)
    ema: EMA
    optimizer: torch.optim.Optimizer
    losses: list[float] = field(default_factory=list)
    step_in_scale: int = 0


class _Loop:
    """The optimisation across scales, with the state a checkpoint captures."""

    def __init__(
        self,
        objective: Objective,
        scales: list[Scale],
        callback: ProgressCallback | None,
        *,
        inputs_id: Callable[[], str],
        backbone_label: str,
        resume: RunState | None,
    ) -> None:
        self.objective = objective
        self.params = objective.params
        self.scales = scales
        self.callback = callback
        # What a checkpoint is checked against on resume: the inputs (hashed only when a
        # checkpoint is taken) and the backbone.
        self.inputs_id = inputs_id
        self.backbone_label = backbone_label
        self.resume = resume
        self.started = time.perf_counter()
        self.prior_elapsed = resume.elapsed_s if resume else 0.0
        self.step = resume.step if resume else 0
        self.skipped = resume.skipped_steps if resume else 0
        self.planned = sum(s.steps for s in scales)
        self.last_loss = float("nan")
        self.stopped = "done"
        self.scale: _ScaleRun | None = None  # the scale being optimised
        self.rgb: torch.Tensor | None = None  # the last finished scale's image

    def elapsed(self) -> float:
        return self.prior_elapsed + time.perf_counter() - self.started

    def current(self) -> torch.Tensor:
        """The image so far, in optimisation space: Adam's iterates jitter around the optimum
        and their average is the better image; L-BFGS's last iterate is its best."""
        assert self.scale is not None
        s = self.scale
        return (s.ema.get() if self.params.optimizer == "adam" else s.x).detach()

    def output(self) -> torch.Tensor:
        assert self.scale is not None
        return self.objective.render(self.current(), self.scale.targets).clamp(0, 1)

    def run(self) -> None:
        first = self.resume.scale_index if self.resume else 0
        for index in range(first, len(self.scales)):
            self.scale = self.enter(index)
            self.run_scale(self.scale)
            self.rgb = self.output()
            if self.stopped == "cancelled":
                return

    def enter(self, index: int) -> _ScaleRun:
        scale = self.scales[index]
        targets = self.objective.targets(scale)
        dev = self.objective.device
        state = self.resume if self.resume and self.resume.scale_index == index else None
        if state is not None:
            x = state.image.to(dev).requires_grad_(True)
            optimizer = _make_optimizer(self.params.optimizer, x)
            optimizer.load_state_dict(state.optimizer)
            return _ScaleRun(
                index,
                targets,
                x,
                EMA.from_state(state.ema, dev),
                optimizer,
                list(state.losses),
                state.step_in_scale,
            )
        if self.scale is None:
            start = self.objective.initial(targets)
        else:  # coarse-to-fine: the previous scale's result, upsampled
            start = _upsample(self.current(), scale)
        x = start.detach().clone().requires_grad_(True)
        return _ScaleRun(
            index, targets, x, EMA(x, EMA_DECAY), _make_optimizer(self.params.optimizer, x)
        )

    def run_scale(self, s: _ScaleRun) -> None:
        scale = self.scales[s.index]
        closure = self.objective.closure(s.optimizer, s.x, s.targets)
        while s.step_in_scale < scale.steps:
            if _converged(s.losses):
                self.skipped += scale.steps - s.step_in_scale
                if s.index == len(self.scales) - 1:
                    self.stopped = "converged"
                return
            loss = s.optimizer.step(closure)
            with torch.no_grad():
                s.x.clamp_(0, 1)
            s.ema.update(s.x)
            self.last_loss = float(loss.detach())
            s.losses.append(self.last_loss)
            s.step_in_scale += 1
            self.step += 1
            if self.callback is not None and self.callback(self.progress()) is STOP:
                self.stopped = "cancelled"
                return

    def progress(self) -> Progress:
        # Counters are taken now; preview()/checkpoint() read the tensors when called, so
        # they are meant to be called from within the callback.
        assert self.scale is not None
        s = self.scale
        counters = (s.index, s.step_in_scale, self.step, self.skipped)

        def preview() -> Image.Image:
            return to_image(self.output())

        def checkpoint() -> dict[str, Any]:
            index, step_in_scale, step, skipped = counters
            state = RunState(
                scale_index=index,
                step_in_scale=step_in_scale,
                step=step,
                image=s.x.detach(),
                ema=s.ema.state(),
                optimizer=s.optimizer.state_dict(),
                losses=s.losses[-2 * CONVERGE_WINDOW :],
                elapsed_s=self.elapsed(),
                skipped_steps=skipped,
            )
            return state.to_dict(self.params, self.inputs_id(), self.backbone_label)

        return Progress(
            scale=s.index,
            n_scales=len(self.scales),
            step=self.step,
            total_steps=self.planned - self.skipped,
            loss=self.last_loss,
            elapsed_s=self.elapsed(),
            preview=preview,
            checkpoint=checkpoint,
        )


def _check_memory(
    final: Scale,
    styles: Sequence[Image.Image],
    params: StyleParams,
    device: torch.device,
    precision: Precision,
) -> None:
    style_edge = round(final.long_edge * params.style_scale)
    style_pixels = max(w * h for w, h in (size_for(*s.size, style_edge) for s in styles))
    check_fits(final.width, final.height, device, precision, style_pixels)


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
    cpu_bf16: bool = True,
) -> StyleResult:
    """Render `content` in the style of `styles` (blended by `params.style_blend`).

    `callback(Progress)` runs after every step; returning STOP ends the run with the image so
    far (at the requested size). `resume` takes a `Progress.checkpoint()` dict of the same job
    and continues from it. `cpu_bf16=False` keeps a CPU run in fp32 even where the CPU does
    bf16 natively. Raises ParamError (bad parameters, size too big for memory, a
    checkpoint of another job) and BackboneError (`vgg19` without weights).
    """
    styles = list(styles)
    params.validate(len(styles))
    dev = pick_device(device)
    if params.size is None:  # resolved before the plan and any checkpoint: they record it
        params = dataclasses.replace(params, size=default_size(dev))
    configure_backends(dev)
    precision = pick_precision(dev, cpu_bf16)
    scales = plan(content.size, params)
    _check_memory(scales[-1], styles, params, dev, precision)
    bb = load_backbone(backbone, weights=weights, pooling=params.pooling, device=dev)
    backbone_key = f"{bb.label}|{weights or ''}|{params.pooling}"
    objective = Objective(
        content, styles, params, bb.model, backbone_key, dev, precision, bb.content_gain
    )

    inputs_id: list[str] = []

    def inputs() -> str:  # hashing megapixels is not free: only when a checkpoint needs it
        if not inputs_id:
            inputs_id.append(_inputs_id(content, styles))
        return inputs_id[0]

    state = parse(resume, params, inputs(), bb.label) if resume is not None else None
    loop = _Loop(
        objective, scales, callback, inputs_id=inputs, backbone_label=bb.label, resume=state
    )
    loop.run()
    assert loop.rgb is not None
    final = scales[-1]
    return StyleResult(
        # Always the requested size, even when a cancelled run stopped at a coarser scale.
        image=resize(to_image(loop.rgb), (final.width, final.height)),
        params=params,
        backbone=bb.label,
        device=device_name(dev),
        steps=loop.step,
        total_steps=loop.planned - loop.skipped,
        seconds=loop.elapsed(),
        final_loss=loop.last_loss,
        stopped=loop.stopped,  # type: ignore[arg-type]
        resumed_from_step=state.step if state else 0,
        versions={**versions(), "precision": precision.label},
    )
