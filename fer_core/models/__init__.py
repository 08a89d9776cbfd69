"""Models for fer-sweep, created by name from one registry (timm-style).

    >>> from fer_core.models import create_model, list_models, is_model
    >>> list_models("*resnet34")
    ['mish_resnet34', 'resnet34', 'se_resnet34']
    >>> model = create_model("fer_cnn_bplusplus", num_classes=4, in_chans=1, dropout_scale=1.2)

Registered models:

- ``fer_cnn_0``, ``fer_cnn_a``, ``fer_cnn_b``, ``fer_cnn_c``, ``fer_cnn_bplus``, ``fer_cnn_bplusplus``,
  ``fer_cnn_d``: the capstone notebook's ladder (``fer_cnn.FerCNN`` presets); their training
  settings are in ``PRESET_DEFAULTS``.
- ``fer_cnn_small``, ``fer_cnn_tiny``: Model B's design scaled down for CPU sweeps and CI;
  ``fer_cnn_plain``: the plain CNN a team writes by hand (32-64-128 double convs, Dense 256), with its
  recipe in ``PRESET_DEFAULTS`` too.
- ``resnet18``, ``resnet34``, ``resnet50``, ``plain34``, ``se_resnet34``, ``mish_resnet34``: ResNets
  with a 48x48-friendly stem (``resnet.ResNet``).
- ``tv_vgg16``, ``tv_resnet50``, ``tv_efficientnet_b0``: torchvision backbones with the notebook's
  transfer-learning heads, weights only from a local ``weights_path`` (``backbones``).

Every model takes ``num_classes``, ``in_chans`` and ``dropout_scale`` and has the same head API
(``forward_features``, ``forward_head``, ``get_classifier``, ``reset_classifier``, ``num_classes``,
``in_chans``, ``num_features``) and ``l2_parameters(scope)`` for a Keras-style L2 penalty.
"""

from ._registry import (
    L2_SCOPES,
    FerModelMixin,
    ModelError,
    create_model,
    is_model,
    list_models,
    model_entrypoint,
    register_model,
)
from .backbones import TorchvisionBackbone
from .fer_cnn import PRESET_DEFAULTS, FerCNN
from .resnet import ResNet

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "is_model",
    "model_entrypoint",
    "ModelError",
    "FerModelMixin",
    "L2_SCOPES",
    "PRESET_DEFAULTS",
    "FerCNN",
    "ResNet",
    "TorchvisionBackbone",
]
