"""Model registry: one ``ModelSpec`` per ``--model`` name says everything the runner knows about it.

Every module defines ``Model(args, dims)``; its ``forward`` takes the inputs of its format's batch
object (``model(*batch.inputs())``). The flag defaults that depend on the model, the checks of
``--n_heads`` and ``--window_stats``, the Time-Series-Library note on ``--d_ff`` and the lists in
``--help`` are all derived from these declarations (config/). Adding a model is one new file plus
one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch.nn as nn


@dataclass(frozen=True)
class ModelSpec:
    module: str  # the file defining Model(args, dims)
    data: str  # the --data format its forward takes
    default_for_data: bool = False  # the model a --data format trains when --model is not given
    # flag -> this model's own default, for the flags declared with per_model (config/flags.py)
    defaults: Mapping[str, object] = field(default_factory=dict)
    statistics_branch: bool = False  # takes --window_stats
    attention: bool = False  # --n_heads must divide --d_model
    uses_d_ff: bool = False  # reads --d_ff (other models ignore it, and a TSL command line is told so)


# Defaults as measured on the real AHU files and the simulator (benchmarks/README.md): derived signals for
# DualGAFNet and ResNet1D, the statistics branch for both (table C's validation folds), jitter for ResNet1D.
MODELS: dict[str, ModelSpec] = {
    "DualGAFNet": ModelSpec(
        "models.DualGAFNet",
        "DualGAF",
        default_for_data=True,
        statistics_branch=True,
        attention=True,
        defaults={"derived_signals": "auto", "window_stats": True},
    ),
    "ResNet1D": ModelSpec(
        "models.ResNet1D",
        "Classification",
        default_for_data=True,
        statistics_branch=True,
        defaults={"derived_signals": "auto", "window_stats": True, "augment_jitter": 0.05},
    ),
    "Transformer": ModelSpec("models.Transformer", "Classification", attention=True, uses_d_ff=True),
    "GNN": ModelSpec("models.GNN", "GNN", default_for_data=True),
}


def models_where(test) -> list[str]:
    """The model names whose spec passes ``test``, in registry order."""
    return [name for name, spec in MODELS.items() if test(spec)]


def default_model(data: str) -> str:
    """The model a ``--data`` format trains when no ``--model`` is given."""
    return next(name for name, spec in MODELS.items() if spec.default_for_data and spec.data == data)


def default_models() -> dict[str, str]:
    """--data format -> its default model."""
    return {spec.data: name for name, spec in MODELS.items() if spec.default_for_data}


@dataclass(frozen=True)
class InputDims:
    channels: int  # sensors
    length: int  # samples per window
    classes: int


def model_format(name: str) -> str:
    return MODELS[name].data


def build_model(name: str, args, dims: InputDims) -> nn.Module:
    module = importlib.import_module(MODELS[name].module)
    return module.Model(args, dims)
