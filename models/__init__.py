"""Model registry: ``--model`` name -> (module, the ``--data`` format its forward takes).

Every module defines ``Model(args, dims)``; its ``forward`` takes the inputs of its format's
batch object (``model(*batch.inputs())``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch.nn as nn

MODELS = {
    "DualGAFNet": ("models.DualGAFNet", "DualGAF"),
    "ResNet1D": ("models.ResNet1D", "Classification"),
    "Transformer": ("models.Transformer", "Classification"),
    "GNN": ("models.GNN", "GNN"),
}

# The model used when --data is given without --model.
DEFAULT_MODEL = {"DualGAF": "DualGAFNet", "Classification": "ResNet1D", "GNN": "GNN"}


@dataclass(frozen=True)
class InputDims:
    channels: int  # sensors
    length: int  # samples per window
    classes: int


def model_format(name: str) -> str:
    return MODELS[name][1]


def build_model(name: str, args, dims: InputDims) -> nn.Module:
    module = importlib.import_module(MODELS[name][0])
    return module.Model(args, dims)
