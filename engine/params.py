"""Plain data that crosses the engine's boundary: a job's parameters, progress and result."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

from PIL import Image

# What the engine accepts for its network and its device; the CLI and the settings offer these.
BackboneMode = Literal["auto", "vgg19", "vgg16-hed", "random"]
BACKBONES: tuple[str, ...] = get_args(BackboneMode)
DeviceChoice = Literal["auto", "cuda", "mps", "cpu"]
DEVICES: tuple[str, ...] = get_args(DeviceChoice)

class ParamError(ValueError):
    """A parameter is out of range or inconsistent; the message says which and why."""


def _param(
    default: Any, label: str, help: str, *, lo: float | None = None, hi: float | None = None
) -> Any:
    """A StyleParams field with what a person needs to know of it: its ``label`` and ``help``
    (the Prefect UI's run form shows both) and its bounds, checked by ``validate`` and shown by
    flows/options.py's pydantic model, both from here."""
    metadata = {"label": label, "help": help, "min": lo, "max": hi}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class StyleParams:
    """Everything that decides the output image.

    Same params + same inputs + same device = same image."""

    size: int | None = _param(
        None,
        "Size (px)",
        "Long edge of the result in pixels (aspect ratio kept); empty: the device's default "
        "(256 on a CPU, 512 on a GPU).",
        lo=16,
        hi=8192,
    )
    iterations: int | None = _param(
        None,
        "Iterations",
        "Optimisation steps at the final scale; empty: the engine's default. More steps take "
        "longer and settle the picture further.",
        lo=1,
        hi=100_000,
    )
    content_weight: float = _param(
        1.0, "Content strength", "How much the photo's shapes count (0: none).", lo=0
    )
    style_weight: float = _param(
        1.0, "Style strength", "How much the style counts (1: normal; above: stronger).", lo=0
    )
    tv_weight: float = _param(
        1.0, "Smoothness", "How much pixel noise is penalised (0: none).", lo=0
    )
    style_scale: float = _param(
        1.0,
        "Style scale",
        "Size of the style image relative to the result's long edge: above 1 gives finer "
        "brush marks, below 1 coarser ones.",
        lo=0.05,
        hi=8,
    )
    style_blend: list[float] | None = _param(
        None,
        "Style blend",
        "One weight per style, in the order of the styles, e.g. [0.7, 0.3]; empty: equal.",
        lo=0,
    )
    preserve_colors: bool = _param(
        False, "Preserve colours", "Keep the photo's colours: transfer the style's brightness only."
    )
    seed: int = _param(
        0, "Random seed", "The same seed, inputs and device give the same image."
    )
    optimizer: Literal["adam", "lbfgs"] = _param(
        "adam", "Optimiser", "adam: steady and cheap per step; lbfgs: fewer, costlier steps."
    )
    pooling: Literal["max", "avg"] = _param(
        "max", "Pooling", "How the network shrinks its feature maps: max (crisper) or avg (softer)."
    )
    style_stat: Literal["gram", "meancov"] = _param(
        "gram",
        "Style statistic",
        "gram: Gram matrices (Gatys); meancov: mean and covariance of the features.",
    )
    min_size: int = _param(
        128, "First scale (px)", "Long edge of the first, coarsest scale in pixels.", lo=16
    )
    init: Literal["content", "random"] = _param(
        "content", "Start from", "content: the photo (recommended); random: noise."
    )

    def validate(self, n_styles: int = 1) -> None:
        """Raise ParamError with a readable reason for anything the engine cannot honour."""
        hints = get_type_hints(StyleParams)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            choices = get_args(hints[f.name]) if get_origin(hints[f.name]) is Literal else ()
            if choices and value not in choices:
                raise ParamError(
                    f"{f.name} must be {' or '.join(map(str, choices))}, got {value!r}"
                )
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            for v in value if isinstance(value, list) else [value]:
                if lo is not None and v < lo or hi is not None and v > hi:
                    raise ParamError(f"{f.name} must be {_bounds(lo, hi)}, got {value}")
        if n_styles < 1:
            raise ParamError("at least one style image is needed")
        if self.style_blend is not None:
            if len(self.style_blend) != n_styles:
                raise ParamError(
                    f"{len(self.style_blend)} blend weights for {n_styles} styles: "
                    "give one per style"
                )
            if sum(self.style_blend) <= 0:
                raise ParamError("blend weights must be non-negative and not all zero")

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
        return cls(**data)


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"between {lo:g} and {hi:g}"
    return f"at least {lo:g}" if lo is not None else f"at most {hi:g}"


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
