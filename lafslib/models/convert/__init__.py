"""Load checkpoints published by the reference projects into lafslib models.

One module per source family; ``fmt`` (``lafs convert --format``, detected when omitted):

- ``insightface``: arcface_torch IResNet ``backbone.pth`` or training ``checkpoint_gpu_*.pt``
  (``state_dict_backbone``); its ``mbf`` backbones become MobileFaceNets.
- ``mobilefacenet``: MobileFaceNet of the paper (128-d, ImageNet-normalised RGB) or
  insightface ``mbf``.
- ``adaface``: AdaFace Lightning ``.ckpt`` (``model.*`` IR backbone; the ``head.*`` margin
  head left out and listed); BGR input folded into the first convolution.
- ``cvlface``: CVLFace ``model.pt`` / ``model.safetensors`` (``net.``): IR, IResNet, ViTs.
- ``lafs`` / ``partfvit``: LAFS pretraining and Part fViT checkpoints.
- ``dino``: DINO ViTs (+ the DINO head); ``timm`` / ``dinov2``: timm, DINOv2, CLIP ViTs.

Files are read with ``torch.load(weights_only=True)`` or safetensors; nothing in a checkpoint is
executed. Every source key is either loaded, listed as deliberately skipped (classifier of a
margin loss, optimizer state, ...), or reported as unexpected; target keys without a source are
reported as missing, and shape mismatches are errors. Every converted model takes the
library's input (RGB in [-1, 1]); the source's own convention is applied inside the model.
"""

from lafslib.models.convert._common import (
    ConversionError,
    ConversionReport,
    read_checkpoint,
)
from lafslib.models.convert.core import FORMATS, convert_checkpoint, convert_to_export
from lafslib.models.convert.detect import detect_format
from lafslib.models.convert.dino import dino_head_from_state, load_dino_head

__all__ = [
    "FORMATS",
    "ConversionError",
    "ConversionReport",
    "read_checkpoint",
    "convert_checkpoint",
    "convert_to_export",
    "detect_format",
    "dino_head_from_state",
    "load_dino_head",
]
