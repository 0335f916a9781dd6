"""PIL <-> tensor conversion, resizing, and the YIQ colour space used to preserve colours."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# NTSC YIQ: Y is luminance, I/Q chroma. Linear, so chroma can be held fixed while Y moves.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def size_for(width: int, height: int, long_edge: int) -> tuple[int, int]:
    """(w, h) with the long edge set to `long_edge` and the aspect ratio kept (each side >= 1)."""
    scale = long_edge / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def to_tensor(image: Image.Image, device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB PIL image -> 1×3×H×W float32 in [0, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """1×3×H×W (or 3×H×W) tensor in [0, 1] -> RGB PIL image."""
    t = tensor.detach().float().squeeze(0).clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(t.permute(1, 2, 0).cpu().numpy(), "RGB")


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(image.device, image.dtype), image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return _apply(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return _apply(_YIQ_TO_RGB, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """N×1×H×W luminance (the Y of YIQ)."""
    return rgb_to_yiq(image)[:, :1]


def gray_like(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's luminance as a grey RGB image, its mean/std matched to the content's.

    Used when preserving colours: the network then learns only texture from the style, and the
    match keeps the style's brightness from washing over the content (Gatys et al. 2016, §2.2).
    """
    ys, yc = luminance(style), luminance(content)
    matched = (ys - ys.mean()) / (ys.std() + 1e-6) * yc.std() + yc.mean()
    return matched.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
