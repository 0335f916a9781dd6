"""Engine speed against a plain baseline, in the same run, on whatever this machine has.

    .venv/bin/python bench/engine.py            # 128 and 256 px on the CPU; 512-2048 on a GPU
    .venv/bin/python bench/engine.py --quality  # also: is bf16 autocast's result as good as fp32?

Both use the random backbone: no weights are needed and speed does not depend on their values.
The baseline is the PyTorch neural style tutorial as it is written (fp32, eager, NCHW, L-BFGS,
Gram matrices on C×HW, losses as modules inside an nn.Sequential), defined here, with its loss
layers moved to the engine's depths (through conv5_1) so that both do the same work per step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import StyleParams, stylize  # noqa: E402
from engine.backbone import build_features, init_random  # noqa: E402
from engine.device import device_name, pick_device, pick_precision  # noqa: E402
from engine.tensors import to_tensor  # noqa: E402

# --- the baseline: pytorch.org/tutorials/advanced/neural_style_tutorial.html -------------------


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = x.size()
    features = x.view(a * b, c * d)
    g = torch.mm(features, features.t())
    return g.div(a * b * c * d)


class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(x, self.target)
        return x


class StyleLoss(nn.Module):
    def __init__(self, target_feature: torch.Tensor) -> None:
        super().__init__()
        self.target = gram_matrix(target_feature).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(gram_matrix(x), self.target)
        return x


class Normalization(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return (img - self.mean.to(img.device)) / self.std.to(img.device)


# The tutorial's own defaults (conv_1..conv_5 style, conv_4 content) stop the network at
# conv3_1, a fifth of the work. For a like-for-like step, the baseline uses the engine's depths:
# style at conv1_1, conv2_1, conv3_1, conv4_1, conv5_1 and content at conv4_2.
BASELINE_STYLE_LAYERS = ["conv_1", "conv_3", "conv_5", "conv_9", "conv_13"]
BASELINE_CONTENT_LAYERS = ["conv_10"]


def baseline_model(cnn: nn.Sequential, style_img, content_img):
    content_layers = BASELINE_CONTENT_LAYERS
    style_layers = BASELINE_STYLE_LAYERS
    model = nn.Sequential(Normalization().to(content_img.device))
    content_losses, style_losses = [], []
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu_{i}"
            layer = nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = f"pool_{i}"
        else:
            name = f"other_{i}"
        model.add_module(name, layer)
        if name in content_layers:
            target = model(content_img).detach()
            content_loss = ContentLoss(target)
            model.add_module(f"content_loss_{i}", content_loss)
            content_losses.append(content_loss)
        if name in style_layers:
            target_feature = model(style_img).detach()
            style_loss = StyleLoss(target_feature)
            model.add_module(f"style_loss_{i}", style_loss)
            style_losses.append(style_loss)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], ContentLoss | StyleLoss):
            break
    return model[: i + 1], style_losses, content_losses


class Clock:
    """Wall and CPU seconds between consecutive ticks. CPU time barely moves while other
    processes hold the cores, so it is the steadier figure on a shared machine."""

    def __init__(self, sync=lambda: None) -> None:
        self.sync = sync
        self.stamps: list[tuple[float, float]] = []

    def tick(self, *_args: object) -> None:
        self.sync()
        self.stamps.append((time.perf_counter(), time.process_time()))

    def deltas(self, skip: int = 0) -> tuple[list[float], list[float]]:
        pairs = list(zip(self.stamps[skip:], self.stamps[skip + 1 :], strict=False))
        return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs]


def baseline_step_times(cnn, content_img, style_img, steps: int, warmup: int = 2):
    """Seconds per closure evaluation (one forward + backward), the tutorial's "step"."""
    input_img = content_img.clone()
    model, style_losses, content_losses = baseline_model(cnn, style_img, content_img)
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = torch.optim.LBFGS([input_img])
    clock = Clock(torch.cuda.synchronize if content_img.is_cuda else (lambda: None))

    def closure():
        with torch.no_grad():
            input_img.clamp_(0, 1)
        optimizer.zero_grad()
        model(input_img)
        style_score = sum(sl.loss for sl in style_losses)
        content_score = sum(cl.loss for cl in content_losses)
        loss = style_score * 1_000_000 + content_score * 1
        loss.backward()
        clock.tick()
        return style_score + content_score

    while len(clock.stamps) <= steps + warmup:
        optimizer.step(closure)
    return clock.deltas(skip=warmup)


# --- measurements -----------------------------------------------------------------------------


def test_images(size: int) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(0)
    h = size * 3 // 4
    y, x = np.mgrid[0:h, 0:size]
    content = np.stack([x * 255 // size, y * 255 // h, ((x // 16 + y // 16) % 2) * 200], -1)
    content = content + rng.integers(0, 40, content.shape)
    style = (np.sin(x[..., None] / 5.0 + np.arange(3)) * 100 + 128) + rng.integers(
        0, 60, (h, size, 3)
    )
    return (
        Image.fromarray(content.clip(0, 255).astype("uint8")),
        Image.fromarray(style.clip(0, 255).astype("uint8")),
    )


def engine_step_times(size: int, device: str, steps: int, warmup: int = 3, cpu_bf16: bool = True):
    """Per-step times of the real engine path (single scale, every step synchronises)."""
    content, style = test_images(size)
    params = StyleParams(size=size, min_size=size, iterations=steps + warmup + 1)
    clock = Clock()
    stylize(
        content, [style], params, device=device, backbone="random", callback=clock.tick,
        cpu_bf16=cpu_bf16,
    )
    return clock.deltas(skip=warmup)


def whole_job(size: int, device: str) -> tuple[float, int, str]:
    content, style = test_images(size)
    t0 = time.perf_counter()
    result = stylize(content, [style], StyleParams(size=size), device=device, backbone="random")
    return time.perf_counter() - t0, result.steps, result.stopped


def best(rounds: list[tuple[list[float], list[float]]]) -> tuple[float, float]:
    """Interleaved rounds, the best median of each clock: on a shared machine the others' load
    comes and goes, and the minimum is the closest to what the code itself costs."""
    wall = min(statistics.median(w) for w, _ in rounds)
    cpu = min(statistics.median(c) for _, c in rounds)
    return wall, cpu


def quality_check(size: int, device: str) -> None:
    """Same default job in fp32 and in bf16 autocast: how far apart are the results, and which
    reaches the lower loss when both are scored in fp32?"""
    from engine.backbone import load_backbone
    from engine.losses import (
        CONTENT_LAYERS,
        STYLE_LAYERS,
        LossWeights,
        style_statistics,
        total_loss,
    )

    content, style = test_images(size)
    images = {}
    for bf16 in (False, True):
        params = StyleParams(size=size)
        images[bf16] = stylize(
            content, [style], params, device=device, backbone="random", cpu_bf16=bf16
        ).image
    model = load_backbone("random", device=device).model.float()
    dev = pick_device(device)
    layers = sorted(set(CONTENT_LAYERS + STYLE_LAYERS))
    with torch.no_grad():
        c = to_tensor(content.resize(images[False].size, Image.Resampling.LANCZOS), dev)
        s = to_tensor(style.resize(images[False].size, Image.Resampling.LANCZOS), dev)
        ct = {k: v.float() for k, v in model(c, CONTENT_LAYERS).items()}
        st = style_statistics(model(s, STYLE_LAYERS), "gram")
        scores = {}
        for bf16, image in images.items():
            x = to_tensor(image, dev)
            w = LossWeights.from_strengths(1.0, 1.0, 1.0)
            scores[bf16] = float(total_loss(model(x, layers), x, ct, st, "gram", w))
    a = np.asarray(images[False], float)
    b = np.asarray(images[True], float)
    psnr = 10 * np.log10(255**2 / max(((a - b) ** 2).mean(), 1e-12))
    print(
        f"\nquality at {size} px: fp32-scored loss fp32={scores[False]:.4f} "
        f"bf16={scores[True]:.4f}; PSNR between the two results {psnr:.1f} dB"
    )


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per round (8)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per size (3)")
    ap.add_argument("--sizes", help="comma-separated long edges (default: by device)")
    ap.add_argument("--no-jobs", action="store_true", help="skip the whole-job timings")
    ap.add_argument("--quality", action="store_true", help="compare bf16 autocast with fp32")
    ap.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's, all cores); 1 is immune "
        "to other processes stalling a thread at each op's barrier on a shared machine",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dev = pick_device(args.device)
    device = dev.type
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [512, 1024, 2048] if dev.type == "cuda" else [128, 256]
    job_sizes = [1024] if dev.type == "cuda" else [128, 256]
    print(f"device: {device_name(dev)}; cpu: {cpu_model()}; threads: {torch.get_num_threads()}")
    print(f"torch {torch.__version__}; engine precision: {pick_precision(dev).label}")
    print(f"load average at start: {load_average()}  (2 cores shared: read the ratios first)")

    cnn = build_features().to(dev)
    init_random(cnn)
    cnn.requires_grad_(False)
    rows = []
    cpu_bf16 = dev.type == "cpu" and pick_precision(dev).autocast_dtype is not None
    for size in sizes:
        content, style = test_images(size)
        c = to_tensor(content, dev)
        s = to_tensor(style.resize(content.size), dev)
        runs: dict[str, list[tuple[list[float], list[float]]]] = {"base": [], "eng": [], "fp32": []}
        for _ in range(args.rounds):
            runs["base"].append(baseline_step_times(cnn, c, s, args.steps))
            runs["eng"].append(engine_step_times(size, device, args.steps))
            if cpu_bf16:
                runs["fp32"].append(engine_step_times(size, device, args.steps, cpu_bf16=False))
        rows.append((size, {k: best(v) for k, v in runs.items() if v}))
        print(f"  measured {size} px", file=sys.stderr)

    print("\nseconds per step, wall (CPU seconds of the process in brackets):\n")
    print("| size | baseline | engine | speed-up wall (CPU) | engine fp32 |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for size, r in rows:
        (bw, bc), (ew, ec) = r["base"], r["eng"]
        fp32 = f"{r['fp32'][0]:.3f} ({r['fp32'][1]:.3f})" if "fp32" in r else "-"
        print(
            f"| {size} | {bw:.3f} ({bc:.3f}) | {ew:.3f} ({ec:.3f}) "
            f"| {bw / ew:.2f}x ({bc / ec:.2f}x) | {fp32} |"
        )

    if not args.no_jobs:
        print("\n| whole default job | wall s | steps | stopped |")
        print("| ---: | ---: | ---: | --- |")
        for size in job_sizes:
            wall, steps, stopped = whole_job(size, device)
            print(f"| {size} px | {wall:.1f} | {steps} | {stopped} |")
    if args.quality:
        quality_check(128, device)
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
