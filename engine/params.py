"""Plain data that crosses the engine's boundary: a job's parameters, progress and result."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from PIL import Image

# What the engine accepts for its network and its device; the CLI and the settings offer these.
BackboneMode = Literal["auto", "vgg19", "vgg16-hed", "random"]
BACKBONES: tuple[str, ...] = get_args(BackboneMode)
DeviceChoice = Literal["auto", "cuda", "mps", "cpu"]
DEVICES: tuple[str, ...] = get_args(DeviceChoice)

class ParamError(ValueError):
    """A parameter is out of range or inconsistent; the message says which and why."""


@dataclass
class StyleParams:
    """Everything that decides the output image.

    Same params + same inputs + same device = same image."""

    # Long edge of the result in pixels (aspect ratio kept); None: the device's default
    # (engine.device.default_size: 256 on a CPU, 512 on a GPU).
    size: int | None = None
    iterations: int | None = None  # steps at the final scale; None: the engine's default
    content_weight: float = 1.0
    style_weight: float = 1.0  # "style strength"
    tv_weight: float = 1.0
    style_scale: float = 1.0  # style image size relative to the output's long edge
    style_blend: list[float] | None = None  # one weight per style; None: equal
    preserve_colors: bool = False  # luminance-only transfer: keep the content's chroma
    seed: int = 0
    optimizer: Literal["adam", "lbfgs"] = "adam"
    pooling: Literal["max", "avg"] = "max"
    style_stat: Literal["gram", "meancov"] = "gram"
    min_size: int = 128  # long edge of the first, coarsest scale
    init: Literal["content", "random"] = "content"

    def validate(self, n_styles: int = 1) -> None:
        """Raise ParamError with a readable reason for anything the engine cannot honour."""
        if self.size is not None and not 16 <= self.size <= 8192:
            raise ParamError(f"size must be between 16 and 8192 pixels, got {self.size}")
        if self.iterations is not None and not 1 <= self.iterations <= 100_000:
            raise ParamError(f"iterations must be between 1 and 100000, got {self.iterations}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) < 0:
                raise ParamError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0.05 <= self.style_scale <= 8:
            raise ParamError(f"style_scale must be between 0.05 and 8, got {self.style_scale}")
        if n_styles < 1:
            raise ParamError("at least one style image is needed")
        if self.style_blend is not None:
            if len(self.style_blend) != n_styles:
                raise ParamError(
                    f"{len(self.style_blend)} blend weights for {n_styles} styles: "
                    "give one per style"
                )
            if any(w < 0 for w in self.style_blend) or sum(self.style_blend) <= 0:
                raise ParamError("blend weights must be non-negative and not all zero")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ParamError(f"optimizer must be adam or lbfgs, got {self.optimizer!r}")
        if self.pooling not in ("max", "avg"):
            raise ParamError(f"pooling must be max or avg, got {self.pooling!r}")
        if self.style_stat not in ("gram", "meancov"):
            raise ParamError(f"style_stat must be gram or meancov, got {self.style_stat!r}")
        if self.init not in ("content", "random"):
            raise ParamError(f"init must be content or random, got {self.init!r}")
        if self.min_size < 16:
            raise ParamError(f"min_size must be at least 16, got {self.min_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StyleParams:
        """Build from user-supplied options; unknown keys are an error, not silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParamError(
                f"unknown option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except TypeError as exc:  # pragma: no cover - dataclass signature errors
            raise ParamError(str(exc)) from exc


@dataclass
class Progress:
    """Handed to the progress callback. ``preview()`` and ``checkpoint()`` are lazy: call them
    only when you need them (they copy the image off the device), and from within the
    callback: they read the run's live tensors."""

    scale: int  # 0-based index of the current scale
    n_scales: int
    step: int  # steps done so far, over all scales
    total_steps: int
    loss: float
    elapsed_s: float
    preview: Callable[[], Image.Image] = field(repr=False)
    checkpoint: Callable[[], dict[str, Any]] = field(repr=False)

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 1.0


# The callback may return STOP (or True) to end the run cleanly with the best image so far.
STOP = True
ProgressCallback = Callable[[Progress], bool | None]


@dataclass
class StyleResult:
    image: Image.Image = field(repr=False)
    params: StyleParams
    backbone: str  # "vgg19-imagenet", "vgg16-hed" or "random(seed=...)": what was used
    device: str  # e.g. "cuda:0 (NVIDIA H100)", "cpu"
    steps: int  # steps done, counting those before a resume
    total_steps: int  # the plan, less the steps early convergence skipped
    seconds: float  # optimisation wall time (style targets included, model loading not),
    # summed over the runs a resumed job took, so steps_per_second stays honest
    final_loss: float
    stopped: Literal["done", "converged", "cancelled"] = "done"
    resumed_from_step: int = 0
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no image)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "image"}
        d["steps_per_second"] = round(self.steps_per_second, 3)
        return d
