"""Where VGG19 weights come from, what happens without them, and the random backbone."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

from engine import BackboneError
from engine import backbone as bb

FILENAME = "vgg19-dcbb9e9d.pth"
_real_probe = bb._probe


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An empty torch hub, a download that fails like it does offline, and no cached models."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    attempts: list[str] = []

    def offline(url: str, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(bb, "_probe", lambda url: None)  # let the download itself fail
    bb.clear_cache()
    yield attempts
    bb.clear_cache()


def _fake_vgg19_file(path: Path, *, old_format: bool = False, drop: str | None = None) -> dict:
    """A file shaped like torchvision's: features.* (random values) plus a classifier."""
    features = bb.build_features()
    bb.init_random(features, seed=123)
    state = {f"features.{k}": v for k, v in features.state_dict().items() if k != drop}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored: never loaded
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path, _use_new_zipfile_serialization=not old_format)
    return features.state_dict()


def _assert_loaded(model: bb.VGGFeatures, expected: dict) -> None:
    got = model.features.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_layers_match_torchvision_vgg19_features() -> None:
    from torchvision.models import vgg19

    ours = bb.build_features()
    theirs = vgg19(weights=None).features[: bb.N_MODULES]
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert ours[0].padding_mode == "replicate"


@pytest.mark.parametrize("old_format", [False, True])
def test_explicit_weights_file_loads_strictly(tmp_path: Path, old_format: bool) -> None:
    path = tmp_path / "mine.pth"
    expected = _fake_vgg19_file(path, old_format=old_format)
    loaded = bb.load_backbone("vgg19", weights=path)
    assert loaded.label == "vgg19-imagenet"
    _assert_loaded(loaded.model, expected)


def test_weights_file_missing_a_layer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "partial.pth"
    _fake_vgg19_file(path, drop="28.weight")
    with pytest.raises(BackboneError, match="does not hold VGG19 features"):
        bb.load_backbone("vgg19", weights=path)


@pytest.mark.parametrize("mode", ["vgg19", "auto"])
def test_explicit_path_that_does_not_exist(tmp_path: Path, mode: str) -> None:
    with pytest.raises(BackboneError, match="does not exist"):
        bb.load_backbone(mode, weights=tmp_path / "nope.pth")


def test_hub_cache_file_is_found(tmp_path: Path, isolated: list[str]) -> None:
    path = tmp_path / "torch-home" / "hub" / "checkpoints" / FILENAME
    expected = _fake_vgg19_file(path)
    loaded = bb.load_backbone("vgg19")
    _assert_loaded(loaded.model, expected)
    assert not isolated  # no download attempted


def test_vgg19_without_weights_says_which_file_goes_where(
    tmp_path: Path, isolated: list[str]
) -> None:
    with pytest.raises(BackboneError) as info:
        bb.load_backbone("vgg19")
    message = str(info.value)
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / FILENAME) in message
    assert "--weights" in message and "Name or service not known" in message
    assert isolated == [bb.WEIGHTS_URL]


def test_unreachable_host_fails_within_the_probe_timeout(monkeypatch, isolated) -> None:
    def dropped(address, timeout):
        assert timeout <= 10
        raise TimeoutError("timed out")

    monkeypatch.setattr(bb, "_probe", _real_probe)
    monkeypatch.setattr(bb.socket, "create_connection", dropped)
    with pytest.raises(BackboneError, match="timed out"):
        bb.load_backbone("vgg19")
    assert not isolated  # torch.hub was never asked


def test_auto_falls_back_to_random_loudly() -> None:
    with pytest.warns(RuntimeWarning, match="RANDOM backbone"):
        loaded = bb.load_backbone("auto")
    assert loaded.label == "random(seed=0)"


def test_backbones_are_cached_per_mode_and_pooling() -> None:
    a = bb.load_backbone("random")
    assert bb.load_backbone("random") is a
    avg = bb.load_backbone("random", pooling="avg")
    assert avg is not a
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in avg.model.features)


def test_random_backbone_is_seeded_and_keeps_activations_alive() -> None:
    a = bb.build_features()
    b = bb.build_features()
    bb.init_random(a)
    bb.init_random(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    model = bb.VGGFeatures(a).eval()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(image, ["relu1_1", "relu5_1"])
    # Kaiming keeps the scale through 16 convs; PyTorch's default init shrinks it ~1000x.
    ratio = out["relu5_1"].std() / out["relu1_1"].std()
    assert 0.05 < ratio < 20


def test_forward_returns_only_the_asked_layers() -> None:
    model = bb.load_backbone("random").model
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32), ["relu2_1", "relu4_2"])
    assert set(out) == {"relu2_1", "relu4_2"}
    assert out["relu2_1"].shape == (1, 128, 16, 16)
    assert out["relu4_2"].shape == (1, 512, 4, 4)
