"""``--export torchscript|onnx``: the trained model as a file that runs without this runner.

What is exported is ``exp.inference.Predictor``: raw sensor windows [B, T, C] in the trained
channel order and units, class probabilities [B, K] out; the training scaler and the format's
input construction (GAF images, sensor graph) are inside. A JSON card next to the file names
the channels, classes, window, stride and sampling interval.

* TorchScript (``model.ts``): ``torch.jit.trace``; load with ``torch.jit.load`` in Python or
  ``torch::jit::load`` in C++ (LibTorch). PyTorch marks TorchScript as deprecated in favour of
  ``torch.export``, but it is still what LibTorch deployments load.
* ONNX (``model.onnx``): PyTorch's exporter, which needs the optional packages ``onnx`` and
  ``onnxscript`` (about 40 MB installed); ``onnxruntime`` runs the file.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from pathlib import Path

import torch

from utils.checkpoint import atomic_write
from utils.errors import UserError

SUFFIX = {"torchscript": "ts", "onnx": "onnx"}
INPUT, OUTPUT = "windows", "probabilities"


def check_available(kind: str | None) -> None:
    """Fail at start, before training, when the export cannot work."""
    if kind == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise UserError("--export onnx: needs the packages onnx and onnxscript (pip install onnx onnxscript)") from None


def export_run(model: torch.nn.Module, data, args, dtype: torch.dtype, path: Path) -> None:
    """The run's model with its data's scaler and format, traced on a CPU copy (the file then
    loads anywhere) with two test windows in sensor units, plus the model card."""
    from data_provider.scaling import unscale
    from exp.inference import deployment_record, predictor_from_model
    from utils.fdd import find_normal_class

    predictor = predictor_from_model(copy.deepcopy(model).cpu(), data, dtype)
    test = data.test
    scaled = test.values[test.starts[:2, None] + test.offsets.numpy()].double().numpy()
    sensors = unscale(data.scaler, scaled)[..., : len(data.sensors)]  # the derived channels are computed inside
    example = torch.as_tensor(sensors).float()  # exported files take float32 windows
    deployment = deployment_record(data, args)
    normal = find_normal_class(data.class_names, args.normal_class)
    card = {key: deployment[key] for key in ("channels", "class_names", "window", "stride", "interval_s", "format")}
    card.update(
        input=f"{INPUT}: float32 [batch, {data.seq_len}, {len(data.sensors)}], raw sensor values in channel order",
        output=f"{OUTPUT}: float64 [batch, {data.num_classes}], in class_names order",
        normal_class=None if normal is None else data.class_names[normal],
        run=path.parent.name,
        torch=torch.__version__,
    )
    export_predictor(predictor, example, path, args.export, card)


def export_predictor(predictor: torch.nn.Module, example: torch.Tensor, path: Path, kind: str, card: dict) -> None:
    predictor = predictor.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation and tracer notes: the test suite compares the outputs instead
        if kind == "torchscript":
            traced = torch.jit.trace(predictor, (example,), check_trace=False)
            atomic_write(path, lambda handle: torch.jit.save(traced, handle))
        else:
            _export_onnx(predictor, example, path)
    atomic_write(path.with_suffix(".json"), lambda handle: handle.write((json.dumps(card, indent=2) + "\n").encode()))


def _export_onnx(predictor, example, path: Path) -> None:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # not a note per torchvision operator it skips
    batch = torch.export.Dim("batch", min=1)
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:  # the exporter writes the file itself: rename it into place
        tmp = Path(folder) / path.name
        program = torch.onnx.export(
            predictor, (example,), input_names=[INPUT], output_names=[OUTPUT], dynamic_shapes=({0: batch},), dynamo=True,
            verbose=False,
        )  # fmt: skip
        program.save(str(tmp))
        atomic_write(path, lambda handle: handle.write(tmp.read_bytes()))
