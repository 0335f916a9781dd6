"""Pure PyTorch neural style transfer: images in and out, the VGG19 backbone, losses, optimisation.

Knows nothing of Prefect or settings: callers pass everything as arguments.
"""

from engine.backbone import BackboneError
from engine.images import ImageError, encode_image, load_image, read_metadata, save_image
from engine.optimize import stylize
from engine.params import STOP, ParamError, Progress, StyleParams, StyleResult

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
