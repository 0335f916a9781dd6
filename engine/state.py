"""The resumable optimisation state: what a checkpoint holds and the checks before resuming."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from engine.params import ParamError, StyleParams

FORMAT = "styledrop.engine.state"
FORMAT_VERSION = 1


class EMA:
    """Bias-corrected exponential moving average of the image (Adam's averaged iterate)."""

    def __init__(self, x: torch.Tensor, decay: float) -> None:
        self.decay = decay
        self.value = torch.zeros_like(x)
        self.accum = 1.0
        self.update(x)

    def update(self, x: torch.Tensor) -> None:
        self.accum *= self.decay
        self.value.mul_(self.decay).add_(x.detach(), alpha=1 - self.decay)

    def get(self) -> torch.Tensor:
        return self.value / (1 - self.accum)

    def state(self) -> dict[str, Any]:
        return {
            "value": self.value.detach().cpu().clone(),
            "accum": self.accum,
            "decay": self.decay,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EMA:
        ema = cls.__new__(cls)
        ema.decay = float(state["decay"])
        ema.value = state["value"].to(device)
        ema.accum = float(state["accum"])
        return ema


def to_cpu(obj: Any) -> Any:
    """Deep copy with every tensor cloned to the CPU: the live optimizer keeps mutating its own."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


@dataclass
class RunState:
    """Where a run is: enough to continue it exactly."""

    scale_index: int
    step_in_scale: int
    step: int  # steps over all scales
    image: torch.Tensor  # the optimised tensor (RGB, or luminance when preserving colours)
    ema: dict[str, Any]
    optimizer: dict[str, Any]
    losses: list[float] = field(default_factory=list)  # this scale's, for convergence
    elapsed_s: float = 0.0
    skipped_steps: int = 0  # planned steps not run because a scale converged early

    def to_dict(self, params: StyleParams, inputs: str, backbone: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "params": params.to_dict(),
            "inputs": inputs,
            "backbone": backbone,
            "scale_index": self.scale_index,
            "step_in_scale": self.step_in_scale,
            "step": self.step,
            "image": to_cpu(self.image),
            "ema": to_cpu(self.ema),
            "optimizer": to_cpu(self.optimizer),
            "losses": list(self.losses),
            "elapsed_s": self.elapsed_s,
            "skipped_steps": self.skipped_steps,
        }


def parse(state: dict[str, Any], params: StyleParams, inputs: str, backbone: str) -> RunState:
    """Check that `state` belongs to this job and return it; ParamError says what differs."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ParamError("resume state is not a styledrop engine checkpoint")
    if state.get("version") != FORMAT_VERSION:
        raise ParamError(
            f"checkpoint format version {state.get('version')} cannot be resumed by this engine "
            f"(version {FORMAT_VERSION}); start the job again"
        )
    theirs = state.get("params", {})
    ours = params.to_dict()
    differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if differ:
        raise ParamError(f"checkpoint was made with different parameters: {', '.join(differ)}")
    if state.get("inputs") != inputs:
        raise ParamError("checkpoint was made for different content or style images")
    if state.get("backbone") != backbone:
        raise ParamError(
            f"checkpoint was made with backbone {state.get('backbone')}, this run has {backbone}"
        )
    # Copies: the run updates its tensors in place, and the caller's dict must stay reusable.
    return RunState(
        scale_index=int(state["scale_index"]),
        step_in_scale=int(state["step_in_scale"]),
        step=int(state["step"]),
        image=to_cpu(state["image"]),
        ema=to_cpu(state["ema"]),
        optimizer=to_cpu(state["optimizer"]),
        losses=[float(v) for v in state.get("losses", [])],
        elapsed_s=float(state.get("elapsed_s", 0.0)),
        skipped_steps=int(state.get("skipped_steps", 0)),
    )
