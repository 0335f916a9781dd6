"""VGG19 feature extractor up to relu5_1: where its weights come from, and an in-process cache.

Only ``vgg19().features`` (truncated) is ever built: the classifier holds ~90% of the file's
parameters and style transfer never uses it.
"""

from __future__ import annotations

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

from engine.device import uses_channels_last

log = logging.getLogger(__name__)

WEIGHTS_FILENAME = "vgg19-dcbb9e9d.pth"
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

BackboneMode = Literal["auto", "vgg19", "random"]
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


def _make(
    mode: Literal["vgg19", "random"], weights: str | Path | None, pooling: Pooling
) -> Backbone:
    features = build_features(pooling)
    if mode == "random":
        init_random(features)
        label = f"random(seed={RANDOM_SEED})"
    else:
        state, source = load_pretrained_state(weights)
        try:
            features.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BackboneError(f"{source} does not hold VGG19 features weights: {exc}") from exc
        label = "vgg19-imagenet"
        log.info("loaded VGG19 weights from %s", source)
    model = VGGFeatures(features).eval()
    model.requires_grad_(False)
    return Backbone(model, label)


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

    `auto` uses the pretrained weights when they can be had and otherwise warns loudly and
    falls back to the random backbone; `vgg19` raises BackboneError instead. An explicit
    `weights` path that cannot be used is an error in both: it is a typo to fix, not a reason
    to spend a job on random features.
    """
    if mode not in ("auto", "vgg19", "random"):
        raise BackboneError(f"backbone must be auto, vgg19 or random, got {mode!r}")
    if pooling not in ("max", "avg"):
        raise BackboneError(f"pooling must be max or avg, got {pooling!r}")
    device = torch.device(device)
    key = (mode, str(weights or ""), pooling, str(device))
    with _lock:  # two jobs starting together must not both load 550 MB
        hit = _cache.get(key)
        if hit is not None:
            return hit
        if mode == "auto" and weights is None:
            try:
                backbone = _make("vgg19", weights, pooling)
            except BackboneError as exc:
                message = (
                    f"using a RANDOM backbone: results will not look like style transfer. {exc}"
                )
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                log.warning(message)
                backbone = _make("random", None, pooling)
        else:
            backbone = _make("vgg19" if mode == "auto" else mode, weights, pooling)
        model = backbone.model.to(device)
        if uses_channels_last(device):
            # Once, here: converting a model other jobs' threads are running would race.
            model = model.to(memory_format=torch.channels_last)
        backbone = Backbone(model, backbone.label)
        _cache[key] = backbone
        return backbone


def clear_cache() -> None:
    with _lock:
        _cache.clear()
