"""Versions recorded in every result and output file, so a result can be traced to its code."""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


@lru_cache
def versions() -> dict[str, str]:
    import PIL
    import torch

    return {
        "styledrop": _version("styledrop"),
        "torch": torch.__version__,
        # From the metadata: importing torchvision costs seconds and the engine never needs it.
        "torchvision": _version("torchvision"),
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }
