"""End-to-end behaviour of `stylize` on tiny images with the random backbone.

Runs are shared through module-scoped fixtures: each one costs a second or two on 2 cores.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image
from PIL import Image

from engine import STOP, ParamError, Progress, StyleParams, StyleResult, load_image, stylize
from engine import optimize as opt
from engine.backbone import load_backbone
from engine.losses import STYLE_LAYER_WEIGHTS, STYLE_LAYERS, scaled_mse, style_statistics
from engine.tensors import rgb_to_yiq, to_tensor

BASE = {"size": 40, "min_size": 32, "iterations": 30}


@pytest.fixture(autouse=True, scope="module")
def _torch_on_one_thread(one_thread):
    """Every engine run in this module on one thread (conftest.one_thread says why)."""


def stripes(color: tuple[int, int, int], vertical: bool, seed: int) -> Image.Image:
    """A style with a strong, distinctive texture and palette."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64]
    on = (((x if vertical else y) // 3) % 2)[..., None]
    arr = np.array(color) * on + rng.random((64, 64, 3)) * 60
    return Image.fromarray(arr.clip(0, 255).astype("uint8"))


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> Image.Image:
    path = make_image(tmp_path_factory.mktemp("content") / "c.png", (48, 40))
    return load_image(path, max_pixels=10**6)


STYLE_A = stripes((255, 40, 40), vertical=False, seed=1)
STYLE_B = stripes((40, 40, 255), vertical=True, seed=2)


def run(content: Image.Image, styles: list[Image.Image], **options) -> tuple[StyleResult, list]:
    seen: list[Progress] = []
    params = StyleParams(**{**BASE, **options})
    result = stylize(content, styles, params, device="cpu", backbone="random", callback=seen.append)
    return result, seen


def style_distance(image: Image.Image, style: Image.Image) -> float:
    """Weighted Gram distance as the engine measures it, through the same random network."""
    model = load_backbone("random").model

    def stats(img: Image.Image):
        with torch.no_grad():
            return style_statistics(model(to_tensor(img), STYLE_LAYERS), "gram")

    a, b = stats(image), stats(style)
    return sum(w * float(scaled_mse(a[n][0], b[n][0])) for n, w in STYLE_LAYER_WEIGHTS.items())


def chroma(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    return rgb_to_yiq(to_tensor(image.resize(size, Image.Resampling.BILINEAR)))[:, 1:]


def luminance_corr(a: Image.Image, b: Image.Image) -> float:
    size = a.size
    ya = np.asarray(a.convert("L"), float).ravel()
    yb = np.asarray(b.convert("L").resize(size), float).ravel()
    return float(np.corrcoef(ya, yb)[0, 1])


@pytest.fixture(scope="module")
def run_a(content):
    return run(content, [STYLE_A])


@pytest.fixture(scope="module")
def run_b(content):
    return run(content, [STYLE_B])


def test_result_describes_the_run(run_a) -> None:
    result, seen = run_a
    assert result.image.size == (40, 33)  # long edge = size, aspect ratio kept
    assert result.backbone == "random(seed=0)"
    assert result.device == "cpu"
    assert result.stopped == "done"
    assert result.steps == len(seen) == result.total_steps
    assert [p.scale for p in (seen[0], seen[-1])] == [0, 1]  # 32 px, then 40 px
    assert seen[-1].n_scales == 2
    assert {"torch", "torchvision", "pillow", "precision"} <= set(result.versions)


def test_loss_falls(run_a) -> None:
    _, seen = run_a
    first_scale = [p.loss for p in seen if p.scale == 0]
    assert first_scale[-1] < 0.6 * first_scale[0]


def test_output_moves_toward_the_style_and_keeps_the_content(content, run_a, run_b) -> None:
    out_a, out_b = run_a[0].image, run_b[0].image
    assert style_distance(out_a, STYLE_A) < 0.6 * style_distance(content, STYLE_A)
    assert style_distance(out_a, STYLE_A) < style_distance(out_b, STYLE_A)
    # Structure: the output's luminance follows the content's, not the style's.
    assert luminance_corr(out_a, content) > 0.3
    assert luminance_corr(out_a, content) > luminance_corr(out_a, STYLE_A) + 0.2


def test_blending_two_styles_lands_between_them(content, run_a, run_b) -> None:
    out_ab = run(content, [STYLE_A, STYLE_B], style_blend=[0.5, 0.5])[0].image
    out_a, out_b = run_a[0].image, run_b[0].image
    for style in (STYLE_A, STYLE_B):
        near, far = sorted([style_distance(out_a, style), style_distance(out_b, style)])
        assert near < style_distance(out_ab, style) < far


def test_preserve_colors_keeps_the_content_chroma(content, run_a) -> None:
    result, _ = run(content, [STYLE_A], preserve_colors=True)
    size = result.image.size
    kept = (chroma(result.image, size) - chroma(content, size)).abs().mean()
    free = (chroma(run_a[0].image, size) - chroma(content, size)).abs().mean()
    assert kept < 0.02
    assert free > 4 * kept
    # ...while the luminance did change toward the style's texture.
    assert luminance_corr(result.image, content) < 0.99


def test_same_seed_gives_the_identical_image(content) -> None:
    options = {"iterations": 6, "init": "random", "seed": 3}
    first, _ = run(content, [STYLE_A], **options)
    again, _ = run(content, [STYLE_A], **options)
    other, _ = run(content, [STYLE_A], **{**options, "seed": 4})
    assert first.image.tobytes() == again.image.tobytes()
    assert first.image.tobytes() != other.image.tobytes()


def test_stop_ends_cleanly_with_the_image_so_far(content) -> None:
    seen: list[int] = []

    def stop_at_5(p: Progress):
        seen.append(p.step)
        return STOP if p.step == 5 else None

    params = StyleParams(**BASE)
    result = stylize(
        content, [STYLE_A], params, device="cpu", backbone="random", callback=stop_at_5
    )
    assert result.stopped == "cancelled"
    assert result.steps == 5 and seen == [1, 2, 3, 4, 5]
    assert result.image.size == (40, 33)  # the requested size even when stopped early


def test_resume_continues_to_the_same_result(content) -> None:
    """Checkpoint mid first scale (of 11 steps), resume, land on the uninterrupted image."""
    saved: dict = {}

    def keep_step_6(p: Progress) -> None:
        if p.step == 6:
            buf = io.BytesIO()
            torch.save(p.checkpoint(), buf)  # must survive a real save/load
            saved["state"] = buf.getvalue()
            saved["preview"] = p.preview()

    params = StyleParams(**{**BASE, "iterations": 10})
    whole = stylize(
        content, [STYLE_A], params, device="cpu", backbone="random", callback=keep_step_6
    )
    # weights_only: the flow loads checkpoints from shared storage without unpickling code.
    state = torch.load(io.BytesIO(saved["state"]), weights_only=True)
    assert state["scale_index"] == 0 and state["step_in_scale"] == 6
    assert saved["preview"].size == (32, 27)

    image_before = state["image"].clone()
    steps: list[int] = []
    resumed = stylize(
        content,
        [STYLE_A],
        params,
        device="cpu",
        backbone="random",
        resume=state,
        callback=lambda p: steps.append(p.step),
    )
    assert resumed.resumed_from_step == 6
    assert torch.equal(state["image"], image_before)  # the caller's state is not consumed
    assert steps[0] == 7 and resumed.steps == whole.steps
    diff = np.abs(np.asarray(resumed.image, int) - np.asarray(whole.image, int))
    assert diff.max() <= 1


def test_resume_refuses_another_jobs_state(content) -> None:
    saved: dict = {}

    def grab(p: Progress):
        saved["state"] = p.checkpoint()
        return STOP

    params = StyleParams(**BASE)
    stylize(content, [STYLE_A], params, device="cpu", backbone="random", callback=grab)
    with pytest.raises(ParamError, match="different parameters: seed"):
        stylize(
            content,
            [STYLE_A],
            StyleParams(**{**BASE, "seed": 9}),
            device="cpu",
            backbone="random",
            resume=saved["state"],
        )
    with pytest.raises(ParamError, match="different content or style"):
        stylize(content, [STYLE_B], params, device="cpu", backbone="random", resume=saved["state"])


def test_stops_early_when_the_loss_has_converged(content, monkeypatch) -> None:
    monkeypatch.setattr(opt, "CONVERGE_WINDOW", 4)
    monkeypatch.setattr(opt, "CONVERGE_TOL", 10.0)  # any window counts as converged
    result, seen = run(content, [STYLE_A], size=32, iterations=100)
    assert result.stopped == "converged"
    assert result.steps == 8
    assert result.total_steps == 8 and seen[-1].total_steps == 100


def test_lbfgs_option_lowers_the_loss_and_resumes(content) -> None:
    saved: dict = {}

    losses: list[float] = []

    def keep_step_4(p: Progress) -> None:
        losses.append(p.loss)
        if p.step == 4:
            buf = io.BytesIO()
            torch.save(p.checkpoint(), buf)
            saved["state"] = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)

    params = StyleParams(size=32, min_size=32, iterations=8, optimizer="lbfgs")
    whole = stylize(
        content, [STYLE_A], params, device="cpu", backbone="random", callback=keep_step_4
    )
    assert whole.steps == 8
    assert losses[-1] < 0.8 * losses[0]
    resumed = stylize(
        content, [STYLE_A], params, device="cpu", backbone="random", resume=saved["state"]
    )
    diff = np.abs(np.asarray(resumed.image, int) - np.asarray(whole.image, int))
    assert diff.max() <= 1


def test_meancov_statistic_and_avg_pooling_run(content) -> None:
    result, seen = run(
        content, [STYLE_A], size=32, iterations=8, style_stat="meancov", pooling="avg"
    )
    assert seen[-1].loss < seen[0].loss
    assert result.image.size == (32, 27)


def test_bad_parameters_are_refused_before_any_work(content) -> None:
    with pytest.raises(ParamError, match="blend weights"):
        stylize(
            content, [STYLE_A], StyleParams(style_blend=[1, 2]), device="cpu", backbone="random"
        )
    with pytest.raises(ParamError, match="size"):
        stylize(content, [STYLE_A], StyleParams(size=4), device="cpu", backbone="random")


def test_a_size_that_cannot_fit_is_refused_with_what_would(content, monkeypatch) -> None:
    monkeypatch.setattr("engine.device.available_bytes", lambda device: 64 * 1024**2)
    with pytest.raises(ParamError, match=r"GiB .* at most about \d+ px"):
        stylize(content, [STYLE_A], StyleParams(size=4096), device="cpu", backbone="random")


def test_style_targets_are_cached_across_jobs(content) -> None:
    from engine import targets

    targets.clear_cache()
    before = dict(targets.stats)
    run(content, [STYLE_B], size=32, iterations=2)
    run(content, [STYLE_B], size=32, iterations=2)
    assert targets.stats["misses"] - before["misses"] == 1
    assert targets.stats["hits"] - before["hits"] == 1


def test_a_random_backbone_result_is_not_silently_a_pretrained_one(tmp_path: Path, content):
    result, _ = run(content, [STYLE_A], size=32, iterations=1)
    assert result.backbone.startswith("random")


def test_size_defaults_to_the_devices_and_is_recorded(content, monkeypatch) -> None:
    from engine import device as dev

    assert dev.default_size(torch.device("cpu")) == 256  # a 512 px job is ~6 min on 2 cores
    assert dev.default_size(torch.device("cuda", 0)) == 512
    monkeypatch.setattr(opt, "default_size", lambda device: 40)  # a tiny "CPU default"
    params = StyleParams(min_size=32, iterations=3)
    assert params.size is None
    result = stylize(content, [STYLE_A], params, device="cpu", backbone="random")
    assert max(result.image.size) == 40
    assert result.params.size == 40  # what was made, in the record and the file's metadata
