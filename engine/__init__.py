"""Pure PyTorch neural style transfer: images in and out, the VGG19 backbone, losses, optimisation.

Knows nothing of Prefect or settings: callers pass everything as arguments.

The parts that need torch (`stylize`, `BackboneError`) load on first use, so code that only
needs the plain facts (`StyleParams`' defaults, the image extensions, the atomic writer) - the
CLI's argument parser, the dashboard, flows.storage - does not pay seconds for importing torch.
"""

from typing import TYPE_CHECKING, Any

from engine.images import ImageError, encode_image, load_image, read_metadata, save_image
from engine.params import STOP, ParamError, Progress, StyleParams, StyleResult

if TYPE_CHECKING:
    from engine.backbone import BackboneError
    from engine.optimize import stylize

_LAZY = {"BackboneError": "engine.backbone", "stylize": "engine.optimize"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "STOP",
    "BackboneError",
    "ImageError",
    "ParamError",
    "Progress",
    "StyleParams",
    "StyleResult",
    "encode_image",
    "load_image",
    "read_metadata",
    "save_image",
    "stylize",
]
