"""Which device and precision a job runs on, and whether its size fits in that device's memory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from engine.params import ParamError


def pick_device(choice: str = "auto") -> torch.device:
    """`auto`: CUDA, then Apple MPS, then CPU. Asking for one that is absent is an error."""
    choice = (choice or "auto").lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParamError("device cuda was asked for but no CUDA GPU is available")
        dev = torch.device(choice)
        return torch.device("cuda", dev.index if dev.index is not None else 0)
    if choice == "mps":
        if not torch.backends.mps.is_available():
            raise ParamError("device mps was asked for but Apple MPS is not available")
        return torch.device("mps")
    if choice == "cpu":
        return torch.device("cpu")
    raise ParamError(f"device must be auto, cuda, mps or cpu, got {choice!r}")


# Long edge when a job names none. On this project's 2-core CPU a default 512 px job takes about
# 6 minutes and a 256 px one 1-2.5 (bench/RESULTS.md); a GPU does 512 px in seconds.
CPU_DEFAULT_SIZE = 256
GPU_DEFAULT_SIZE = 512


def default_size(device: torch.device) -> int:
    return CPU_DEFAULT_SIZE if device.type == "cpu" else GPU_DEFAULT_SIZE


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _cpu_has_avx512_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = [line for line in f if line.startswith("flags")]
        return any("avx512_bf16" in line or "amx_bf16" in line for line in flags)
    except OSError:
        return False


@dataclass(frozen=True)
class Precision:
    """How the convolutions run. Statistics and the image itself are always fp32."""

    autocast_dtype: torch.dtype | None  # None: plain fp32
    channels_last: bool

    @property
    def label(self) -> str:
        return "bf16-autocast" if self.autocast_dtype is torch.bfloat16 else "fp32"


def uses_channels_last(device: torch.device) -> bool:
    """NHWC is what cuDNN's tensor-core kernels and oneDNN want; MPS gains nothing from it."""
    return device.type in ("cuda", "cpu")


def pick_precision(device: torch.device, cpu_bf16: bool = True) -> Precision:
    """bf16 autocast for the convolutions where the hardware does bf16 natively. On the CPU it
    is the default because bench/RESULTS.md measured about 2x per step on AVX-512 bf16 CPUs and
    a result within noise of fp32's; `cpu_bf16=False` keeps fp32 there."""
    channels_last = uses_channels_last(device)
    if device.type == "cuda":
        return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else None, channels_last)
    if device.type == "cpu":
        dtype = torch.bfloat16 if cpu_bf16 and _cpu_has_avx512_bf16() else None
        return Precision(dtype, channels_last)
    return Precision(None, channels_last)  # MPS: bf16 autocast support varies by macOS version


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    if precision.autocast_dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=precision.autocast_dtype):
        yield


def configure_backends(device: torch.device) -> None:
    """Fast convolution algorithms, restricted to deterministic ones.

    The backward pass only flows to the input (weights are frozen), so only data-gradient
    algorithms are involved, and the non-deterministic cuDNN algorithms are mostly
    weight-gradient ones: determinism should cost little. Not yet measured on a GPU
    (bench/RESULTS.md); if it does cost, this is the line to revisit.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = True


# --- memory -----------------------------------------------------------------------------------

# Activations kept for backward per input pixel, summed over VGG19 to relu5_1: conv and ReLU
# outputs (in place, so one per conv) at 1, 1/4, 1/16, 1/64, 1/256 of the pixels, plus pools.
_CHANNELS_PER_PIXEL = (
    2 * 64 + 64 / 4  # block 1 + pool
    + (2 * 128) / 4 + 128 / 16
    + (4 * 256) / 16 + 256 / 64
    + (4 * 512) / 64 + 512 / 256
    + 512 / 256
)  # fmt: skip
# Gradients during backward, the loss terms, allocator slack. With this, the estimate is 1.3x
# the measured peak for fp32 at 256 and 512 px on the CPU, and bf16 autocast measured lower
# than fp32 (its bf16 copies replace fp32 activations), so both use 4 bytes per value.
_OVERHEAD = 3.0
# A no-grad pass (the style image's statistics) keeps only a couple of layers alive at once:
# the input, conv1_1's and conv1_2's outputs at full resolution, plus slack.
_NOGRAD_CHANNELS_PER_PIXEL = 3 + 64 + 64 + 30


def estimate_bytes(width: int, height: int, precision: Precision, style_pixels: int = 0) -> int:
    """Peak memory of a job at this size: its gradient pass, or a bigger style image's pass."""
    del precision  # see _OVERHEAD: the same 4 bytes per value for fp32 and bf16 autocast
    grad_pass = width * height * _CHANNELS_PER_PIXEL * 4 * _OVERHEAD
    style_pass = style_pixels * _NOGRAD_CHANNELS_PER_PIXEL * 4
    return int(max(grad_pass, style_pass))


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # Blocks this process's caching allocator holds but does not use are free to us too;
        # without them a worker would refuse a job it ran fine a moment ago.
        idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + idle)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None  # MPS shares system memory and reports nothing useful


def check_fits(
    width: int, height: int, device: torch.device, precision: Precision, style_pixels: int = 0
) -> None:
    """Refuse, with the size that would fit, a job whose activations exceed free memory."""
    need = estimate_bytes(width, height, precision, style_pixels)
    have = available_bytes(device)
    if have is None or need <= have:
        return
    fit = int(max(width, height) * (have / need) ** 0.5)
    gib = 1024**3
    raise ParamError(
        f"a {width}x{height} result needs about {need / gib:.1f} GiB for VGG19 activations but "
        f"only {have / gib:.1f} GiB is free on {device_name(device)}; use a size of at most about "
        f"{fit} px (long edge)"
    )
