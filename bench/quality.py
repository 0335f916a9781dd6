"""Time to quality: the engine against the PyTorch tutorial's recipe, same network, same run.

    .venv/bin/python bench/quality.py                      # 128 px on the CPU, 256 px on a GPU
    .venv/bin/python bench/quality.py --size 256 --photo astronaut --style starry_swirls

Both optimise the same photo toward the same style with the same trained network (ImageNet
VGG19 when its weights are here, else the offline fallback vgg16-hed, at torchvision's
activation scale, where the tutorial's style weight of 1e6 is meant). One independent fp32
scorer (engine.quality.Scorer: relative Gram distance at relu1_1/2_1/3_1 plus relative feature
distance at relu4_2) judges both; scoring time is not counted. Reported: the seconds (CPU
seconds of this process, steadier than wall time on a shared machine, and wall) each first
reaches the quality both reach in the end, and the final scores.

Baseline: pytorch.org/tutorials/advanced/neural_style_tutorial.html as written (fp32, L-BFGS
with its defaults, Gram / (C·H·W), MSE, style weight 1e6, content weight 1, starting from the
photo, one scale), with its loss layers at the engine's depths (bench/engine.py).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import StyleParams, stylize  # noqa: E402
from engine.backbone import load_backbone  # noqa: E402
from engine.device import device_name, pick_device  # noqa: E402
from engine.quality import Scorer  # noqa: E402
from engine.tensors import resize, size_for, to_tensor  # noqa: E402


def _bench_engine():
    """bench/engine.py (its baseline code), loaded by path: its module name is the package's."""
    spec = importlib.util.spec_from_file_location("bench_engine", ROOT / "bench" / "engine.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Trace:
    """(cpu seconds, wall seconds, quality) after each scored step; lower quality is better."""

    points: list[tuple[float, float, float]] = field(default_factory=list)
    cpu0: float = field(default_factory=time.process_time)
    wall0: float = field(default_factory=time.perf_counter)
    paused_cpu: float = 0.0
    paused_wall: float = 0.0
    last_image: object = None  # the baseline's final tensor

    def record(self, quality_of) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        q = quality_of()
        spent = (cpu - self.cpu0 - self.paused_cpu, wall - self.wall0 - self.paused_wall)
        self.points.append((*spent, q))
        self.paused_cpu += time.process_time() - cpu
        self.paused_wall += time.perf_counter() - wall

    def first_reaching(self, target: float) -> tuple[float, float] | None:
        for cpu, wall, q in self.points:
            if q <= target:
                return cpu, wall
        return None


def quality(score) -> float:
    return score.style + score.content


def run_engine(
    photo, style, params, device, backbone_mode, scorer, every, cpu_bf16=True
) -> tuple[Trace, object]:
    trace = Trace()

    def callback(p):
        if p.step % every == 0 or p.step == p.total_steps:
            trace.record(lambda: quality(scorer(p.preview())))

    result = stylize(
        photo, [style], params, device=device, backbone=backbone_mode,
        callback=callback, cpu_bf16=cpu_bf16,
    )  # fmt: skip
    return trace, result


def run_baseline(photo, style, size, device, model, scorer, evaluations, style_weight) -> Trace:
    be = _bench_engine()
    dev = torch.device(device)
    content = to_tensor(resize(photo, size_for(*photo.size, size)), dev)
    # The tutorial's images are the same size (its style passes through the content loss).
    style_t = to_tensor(resize(style, (content.shape[-1], content.shape[-2])), dev)
    # A plain NCHW copy: the engine's cached model is channels-last, which the tutorial is not.
    cnn = copy.deepcopy(model.features).to(memory_format=torch.contiguous_format)
    trace = Trace()
    net, style_losses, content_losses = be.baseline_model(cnn, style_t, content)
    net.eval()
    net.requires_grad_(False)
    x = content.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x])
    count = [0]

    def closure():
        with torch.no_grad():
            x.clamp_(0, 1)
        optimizer.zero_grad()
        net(x)
        style_score = sum(sl.loss for sl in style_losses)
        content_score = sum(cl.loss for cl in content_losses)
        loss = style_score * style_weight + content_score * 1
        loss.backward()
        count[0] += 1
        return style_score + content_score

    while count[0] < evaluations:
        optimizer.step(closure)  # the tutorial's step: up to 20 evaluations
        with torch.no_grad():
            x.clamp_(0, 1)
        trace.record(lambda: quality(scorer(x.detach())))
    trace.last_image = x.detach().clone()
    return trace


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, help="long edge (default: 128 on a CPU, 256 on a GPU)")
    ap.add_argument("--photo", default="chelsea", help="tests/data/photos/NAME.jpg (chelsea)")
    ap.add_argument("--style", default="mosaic", help="gallery style name (mosaic)")
    ap.add_argument("--backbone", default="auto", help="auto, vgg19 or vgg16-hed (auto)")
    ap.add_argument("--evaluations", type=int, default=300, help="baseline's (the tutorial's 300)")
    ap.add_argument(
        "--threads", type=int, help="torch threads (default torch's; 1 on a busy shared CPU)"
    )
    ap.add_argument(
        "--style-weights", type=float, nargs="+", default=[1e6],
        help="the baseline's style weight(s): the tutorial's 1e6, and others to be fair to it",
    )  # fmt: skip
    ap.add_argument("--every", type=int, default=10, help="engine steps between scores (10)")
    ap.add_argument("--iterations", type=int, help="the engine's steps (default: the engine's)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = pick_device(args.device)
    size = args.size or (256 if dev.type == "cuda" else 128)
    if args.backbone == "random":
        ap.error("a random network cannot judge quality")
    bb = load_backbone(args.backbone, device=dev)  # type: ignore[arg-type]
    photo = Image.open(ROOT / "tests" / "data" / "photos" / f"{args.photo}.jpg").convert("RGB")
    style_file = next((ROOT / "styles").glob(f"{args.style}.*"))
    style = Image.open(style_file).convert("RGB")
    scorer = Scorer(bb.model, photo, style, size)
    start = quality(scorer(photo))

    print(f"device {device_name(dev)}, backbone {bb.label}, {args.photo} x {args.style}, {size} px")
    print(f"quality (style + content distance, lower is better) of the photo itself: {start:.3f}")
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    rows = []  # (name, final Score, trace)
    params = StyleParams(size=size, iterations=args.iterations)
    trace, result = run_engine(photo, style, params, args.device, bb.label, scorer, args.every)
    precision = result.versions.get("precision", "?")
    rows.append((f"engine, {precision} ({result.steps} steps)", scorer(result.image), trace))
    if precision != "fp32":  # the CPU bf16 decision, re-checked with a trained network
        trace, result = run_engine(
            photo, style, params, args.device, bb.label, scorer, args.every, cpu_bf16=False
        )
        rows.append((f"engine, fp32 ({result.steps} steps)", scorer(result.image), trace))
    for weight in args.style_weights:
        trace = run_baseline(
            photo, style, size, dev, bb.model, scorer, args.evaluations, weight
        )
        name = f"baseline, style weight {weight:g} ({args.evaluations} evaluations)"
        rows.append((name, scorer(trace.last_image), trace))

    # The engine's final quality, with 10% slack: what "as good" means here.
    target = 1.1 * quality(rows[0][1])
    print(f"target: within 10% of the engine's final quality, {target:.3f}\n")
    print("| recipe | final style | final content | best (at CPU s) | CPU s to target | wall s to target | CPU s |")  # noqa: E501
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    reached = []
    for name, score, trace in rows:
        hit = trace.first_reaching(target)
        reached.append(hit)
        cpu, wall = hit if hit else (float("nan"), float("nan"))
        best = min(trace.points, key=lambda p: p[2])
        total = trace.points[-1][0]
        cells = [name, f"{score.style:.3f}", f"{score.content:.3f}"]
        cells += [f"{best[2]:.3f} ({best[0]:.1f})"]
        cells += [f"{cpu:.1f}" if hit else "never", f"{wall:.1f}" if hit else "never"]
        cells += [f"{total:.1f}"]
        print("| " + " | ".join(cells) + " |")
    for (name, _, _), hit in zip(rows[1:], reached[1:], strict=True):
        if reached[0] and hit:
            cpu_ratio, wall_ratio = hit[0] / reached[0][0], hit[1] / reached[0][1]
            print(f"{name} / engine, to target: {cpu_ratio:.2f}x CPU s, {wall_ratio:.2f}x wall s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
