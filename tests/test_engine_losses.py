"""Loss normalisation, style statistics, blending, the scale plan and device choices."""

from __future__ import annotations

import pytest
import torch

from engine import ParamError, StyleParams
from engine.device import Precision, check_fits, estimate_bytes, pick_device, pick_precision
from engine.losses import (
    STYLE_LAYER_WEIGHTS,
    blend_targets,
    gram,
    mean_cov,
    scaled_mse,
    tv_loss,
)
from engine.schedule import plan, scale_edges
from engine.tensors import rgb_to_yiq, yiq_to_rgb

gen = torch.Generator().manual_seed(0)


def feats(c: int = 8, h: int = 6, w: int = 5) -> torch.Tensor:
    return torch.rand(1, c, h, w, generator=gen)


def test_gram_is_normalised_by_positions() -> None:
    f = feats()
    tiled = f.repeat(1, 1, 2, 3)  # the same texture over 6x the area
    assert torch.allclose(gram(tiled), gram(f), atol=1e-6)


def test_gram_is_computed_in_fp32_from_bf16() -> None:
    f = feats().to(torch.bfloat16)
    assert gram(f).dtype == torch.float32


def test_mean_cov() -> None:
    f = feats()
    mean, cov = mean_cov(f)
    flat = f[0].reshape(8, -1)
    assert torch.allclose(mean, flat.mean(1))
    assert torch.allclose(cov, torch.cov(flat, correction=0), atol=1e-6)
    _, flat_cov = mean_cov(torch.ones(1, 4, 3, 3))
    assert flat_cov.abs().max() == 0


def test_scaled_mse_does_not_depend_on_size_and_is_degree_one() -> None:
    a, b = feats(), feats()
    base = scaled_mse(a, b)
    # Same error spread over 4x the elements: same loss (weights mean the same at any size).
    assert torch.allclose(scaled_mse(a.repeat(1, 1, 2, 2), b.repeat(1, 1, 2, 2)), base)
    assert torch.allclose(scaled_mse(3 * a, 3 * b), 3 * base)


def test_style_layers_weigh_less_with_depth() -> None:
    weights = list(STYLE_LAYER_WEIGHTS.values())
    assert weights == sorted(weights, reverse=True)
    assert sum(weights) == pytest.approx(1.0)


def test_blend_normalises_weights() -> None:
    a = {"relu1_1": (torch.zeros(2, 2),)}
    b = {"relu1_1": (torch.ones(2, 2),)}
    blended = blend_targets([a, b], [3.0, 1.0])
    assert torch.allclose(blended["relu1_1"][0], torch.full((2, 2), 0.25))


def test_tv_loss_is_zero_on_flat_and_size_independent() -> None:
    assert tv_loss(torch.full((1, 3, 8, 8), 0.3)) == 0
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[..., ::2] = 1
    assert torch.allclose(tv_loss(stripes), tv_loss(stripes.repeat(1, 1, 4, 4)), rtol=0.1)


def test_yiq_round_trip() -> None:
    x = torch.rand(1, 3, 4, 4, generator=gen)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5)


def test_scales_go_up_by_root_two_to_the_target() -> None:
    assert scale_edges(256, 128) == [128, 181, 256]
    assert scale_edges(100, 128) == [100]
    assert scale_edges(1024, 128) == [128, 181, 256, 362, 512, 724, 1024]
    assert scale_edges(132, 128) == [132]  # a step of <5% is not worth a scale


def test_plan_keeps_aspect_and_spends_more_steps_on_coarse_scales() -> None:
    scales = plan((400, 300), StyleParams(size=256, iterations=100))
    assert [(s.width, s.height) for s in scales] == [(128, 96), (181, 136), (256, 192)]
    assert [s.steps for s in scales] == [141, 119, 100]
    big = plan((400, 300), StyleParams(size=2048, iterations=100))
    assert big[0].steps == 200 and big[-1].steps == 100  # coarse factor is capped at 2


def test_device_choice() -> None:
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ParamError, match="device must be"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParamError, match="no CUDA GPU"):
            pick_device("cuda")


def test_cpu_bf16_can_be_turned_off() -> None:
    assert pick_precision(torch.device("cpu"), cpu_bf16=False).autocast_dtype is None


def test_memory_estimate_grows_with_area_and_refuses_clearly(monkeypatch) -> None:
    fp32 = Precision(None, True)
    assert estimate_bytes(2048, 2048, fp32) == pytest.approx(4 * estimate_bytes(1024, 1024, fp32))
    # VGG19 at 1024 px: a few GB, as measured on GPUs (not MB, not hundreds of GB).
    assert 1e9 < estimate_bytes(1024, 1024, fp32) < 2e10
    check_fits(64, 64, torch.device("cpu"), fp32)  # fits anywhere
    monkeypatch.setattr("engine.device.available_bytes", lambda device: 2 * 1024**3)
    with pytest.raises(ParamError, match="at most about"):
        check_fits(4096, 4096, torch.device("cpu"), fp32)
