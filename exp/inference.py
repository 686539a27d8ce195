"""A trained model as a deployable function: raw sensor windows in, class probabilities out.

The checkpoint carries a ``deployment`` record (sensor names and order, class names, window
length and stride, the sampling interval, the training scaler as per-channel affine numbers, the
sensor graph, the GAF settings). ``Predictor`` rebuilds the model from it and puts the scaler and
the format's input construction (GAF images, graph) in front, so ``--predict``, the exported
TorchScript/ONNX files and the test-set predictions of training all compute the same function.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from data_provider.csv_source import sampling_interval
from data_provider.data_factory import FORMATS
from data_provider.derived import Derivation
from data_provider.scaling import affine_tensors
from models import InputDims, build_model
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.outputs import writing

TOP_K = 3


def deployment_record(data, args) -> dict:
    """What applying the model to new data needs besides the weights (plain data only, so the
    checkpoint stays loadable with ``weights_only=True``)."""
    adjacency = getattr(data.fmt, "adjacency", None)
    return {
        "kind": "uea" if data.ready_cut else "table",
        "channels": list(data.sensors),
        "derived": [dict(step) for step in data.derived],
        "class_names": list(data.class_names),
        "format": args.data,
        "window": int(data.seq_len),
        "stride": int(args.stride),
        "interval_s": sampling_interval(data.times),
        "scaler": affine_tensors(data.scaler),
        "adjacency": None if adjacency is None else adjacency.detach().cpu().clone(),
        "normal_class": args.normal_class,
    }


class Predictor(nn.Module):
    """Raw windows [B, T, C] (sensor units, the trained channel order) -> probabilities [B, K].

    The scaler runs in float64 with the same operations as training, then the window takes the
    model's dtype, goes through its format (GAF images, graph) and the model."""

    def __init__(self, model: nn.Module, fmt, scaler: dict, dtype: torch.dtype, derived: list[dict] = ()):
        super().__init__()
        self.model, self.fmt, self.dtype = model, fmt, dtype
        self.derivation = Derivation(list(derived))  # the derived channels, from the raw sensors as in training
        for key in ("center", "width", "gain", "bias"):
            self.register_buffer(key, torch.as_tensor(scaler[key], dtype=torch.float64))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        x = ((self.derivation(windows.to(torch.float64)) - self.center) / self.width * self.gain + self.bias).to(self.dtype)
        labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        batch = self.fmt.make_batch(x, labels).to(x.device)
        return torch.softmax(self.model(*batch.inputs()).to(torch.float64), dim=-1)


def predictor_from_model(model: nn.Module, data, dtype: torch.dtype) -> Predictor:
    """The Predictor of a model trained in this process on ``data`` (its scaler, format and derived channels)."""
    return Predictor(model, data.fmt, affine_tensors(data.scaler), dtype, data.derived)


def load_predictor(path: Path, device: torch.device) -> tuple[Predictor, dict]:
    """A checkpoint -> (Predictor on ``device`` in eval mode, the checkpoint dict)."""
    state = load_checkpoint(path)
    deployment = state.get("deployment")
    if deployment is None:
        raise UserError(f"--checkpoint: {path} was written by an older version without the scaler and window settings; retrain it")
    if deployment["kind"] == "uea":
        raise UserError(f"--checkpoint: {path} was trained on ready-cut UEA samples; --predict reads sensor logs (CSV)")
    saved = argparse.Namespace(**state["args"])
    fmt = FORMATS[deployment["format"]](saved, deployment["window"])
    if deployment["adjacency"] is not None:
        fmt.adjacency = deployment["adjacency"]
    derived = deployment.get("derived", [])
    dims = InputDims(len(deployment["channels"]) + len(derived), deployment["window"], len(deployment["class_names"]))
    dtype = torch.float64 if saved.dtype == "float64" else torch.float32
    model = build_model(saved.model, saved, dims).to(dtype=dtype)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise UserError(f"--checkpoint: {path}: the weights do not fit its own model settings (a damaged checkpoint?)") from None
    return Predictor(model, fmt, deployment["scaler"], dtype, derived).to(device).eval(), state


@torch.no_grad()
def probabilities(predictor: Predictor, values: np.ndarray, starts: np.ndarray, length: int, device: torch.device,
                  batch_size: int = 256) -> np.ndarray:  # fmt: skip
    """Raw rows [rows, C] and window starts -> [N, K] float64 probabilities; windows are cut a
    batch at a time, so memory does not grow with the log."""
    offsets = np.arange(length)
    return np.concatenate([predictor(torch.as_tensor(values[starts[i : i + batch_size, None] + offsets], device=device)).cpu().numpy()
                           for i in range(0, len(starts), batch_size)])  # fmt: skip


def prediction_table(starts, ends, probs: np.ndarray, class_names: list[str], y_true=None, units=None) -> pd.DataFrame:
    """One row per window: its unit (with several logs), its bounds, the true class (when known), the
    predicted class and its probability, and the runners-up up to the top 3."""
    names = np.asarray(class_names, dtype=object)
    order = np.argsort(-probs, axis=1, kind="stable")[:, : min(TOP_K, probs.shape[1])]
    table = ({} if units is None else {"unit": units}) | {"window_start": starts, "window_end": ends}
    if y_true is not None:
        table["true_class"] = names[np.asarray(y_true, dtype=np.int64)]
    for rank in range(order.shape[1]):
        prefix = "predicted" if rank == 0 else f"top{rank + 1}"
        table[f"{prefix}_class"] = names[order[:, rank]]
        table["probability" if rank == 0 else f"top{rank + 1}_probability"] = np.take_along_axis(probs, order[:, rank : rank + 1], 1)[:, 0]
    return pd.DataFrame(table)


def write_predictions(path: Path, table: pd.DataFrame) -> None:
    from utils.checkpoint import atomic_write

    with writing(path):
        atomic_write(path, lambda handle: handle.write(table.to_csv(index=False, float_format="%.8g").encode()))
