"""Backbones and heads, built by name through the registry."""

from lafslib.models import cvlface_vit as _cvlface_vit  # noqa: F401  (registers)
from lafslib.models import vit as _vit  # noqa: F401  (registers the ViT factories)
from lafslib.models._registry import (
    ModelInfo,
    create_model,
    list_models,
    model_info,
    register_model,
)
from lafslib.models.drop_path import set_drop_path
from lafslib.models.export import load_export, save_export
from lafslib.models.heads import DINOHead
from lafslib.models.iresnet import IResNet
from lafslib.models.landmark_net import LandmarkNet
from lafslib.models.mobilefacenet import MobileFaceNet, MobileFaceNetMBF
from lafslib.models.part_fvit import PartFViT
from lafslib.models.ssl_features import SSLFeatures
from lafslib.models.timm_backbone import TimmViT

__all__ = [
    "DINOHead",
    "IResNet",
    "LandmarkNet",
    "MobileFaceNet",
    "MobileFaceNetMBF",
    "PartFViT",
    "SSLFeatures",
    "TimmViT",
    "ModelInfo",
    "create_model",
    "list_models",
    "load_export",
    "model_info",
    "register_model",
    "save_export",
    "set_drop_path",
]
