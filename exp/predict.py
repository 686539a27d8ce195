"""``run.py --predict``: apply a trained checkpoint (or several, averaged) to a new sensor log.

The log is read like training data (same CSV rules, --missing, time gaps cut segments), its
sensor columns must be the trained ones, its sampling interval the trained one. Windows of the
trained length are cut every trained stride (``--stride`` overrides) inside every stretch
without a time gap, and the training scaler, graph and GAF settings (all in the checkpoint)
turn them into model inputs. Labels are optional: when the log has the label column and its
classes are the model's, the metrics and the fault-detection report follow too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from config.flags import flag_table
from data_provider.csv_source import read_sensor_csv, sniff_dialect
from data_provider.windows import find_segments, window_bounds, window_starts
from exp.ensemble import check_members, mean_probabilities
from exp.inference import load_predictor, prediction_table, probabilities, write_predictions
from exp.runtime import resolve_device
from utils.errors import UserError
from utils.fdd import diagnosis_fields, find_normal_class, format_report
from utils.metrics import classification_report
from utils.outputs import ensure_dir, safe_name, write_json, writing


def predict(args) -> int:
    parts = [part.strip() for part in args.checkpoint.split(",")]  # several: an ensemble
    if not all(parts):
        raise UserError(f"--checkpoint: an empty path in {args.checkpoint!r} (separate several with commas, no empty ones)")
    checkpoints = [Path(part) for part in parts]
    checkpoint = checkpoints[0]  # its training settings (CSV columns, stride) apply to the log
    device = resolve_device(args.device)
    loaded = [load_predictor(path, device) for path in checkpoints]
    predictors, state = [predictor for predictor, _ in loaded], loaded[0][1]
    check_members([s["deployment"] for _, s in loaded], checkpoints)
    deployment = state["deployment"]
    channels, class_names, window = deployment["channels"], deployment["class_names"], deployment["window"]
    stride = args.stride or deployment["stride"]
    normal = find_normal_class(class_names, args.normal_class or deployment.get("normal_class"))  # before any output
    if args.step not in (window, flag_table()["step"].action.default):  # --step typed otherwise than the window
        raise UserError(f"--step {args.step}: the model was trained on windows of {window} rows; --predict uses those (leave out --step)")

    read = csv_settings(args, state["args"])
    path = Path(args.root_path) / args.data_path
    features = [c.strip() for c in read.feature_cols.split(",")] if read.feature_cols else None
    inventory = Path(args.root_path) / args.fault_inventory if args.fault_inventory else None
    dialect = sniff_dialect(path, args.csv_sep, args.csv_decimal)  # the new log's own, whatever the training file's
    log = read_sensor_csv(path, read.time_col, read.label_col, features, inventory, read.missing, labels_required=False,
                          dialect=dialect, duplicates=read.duplicates, max_gap_s=read.max_gap,
                          trained_interval_s=deployment["interval_s"])  # fmt: skip
    print(f"Reading {path} ({dialect.describe()})", flush=True)
    for note in log.notes:
        print(f"note: {note}", flush=True)
    if log.sampling is not None:
        print(f"Sampling: {log.sampling.describe(log.breaks, window, read.missing)}", flush=True)
    elif deployment["interval_s"] is not None:
        print(f"note: {path} has no time column; its rows are taken as {deployment['interval_s']:g} s apart, as in training", flush=True)
    values = _trained_columns(log, channels, path)

    labels = _known_labels(log.labels, class_names, read.label_col, path)
    segments = find_segments(np.zeros(len(values), dtype=np.int64) if labels is None else labels, log.breaks)
    starts = np.concatenate([window_starts(seg.start, seg.end, window, stride) for seg in segments]).astype(np.int64)
    if not len(starts):
        longest = max(seg.end - seg.start for seg in segments)
        raise UserError(
            f"--data_path: {path}: the model's windows of {window} rows are longer than every stretch of the file "
            f"without a time gap{' or label change' if labels is not None else ''} (the longest has {longest} rows)"
        )
    probs = mean_probabilities([probabilities(predictor, values, starts, window, device) for predictor in predictors])
    y_true = None if labels is None else labels[starts]

    model = safe_name(checkpoint.stem) if len(checkpoints) == 1 else f"ensemble_of_{len(checkpoints)}"
    folder = f"predict_{safe_name(Path(args.data_path).stem)}_{model}"  # per log and checkpoint (or ensemble)
    out_dir = ensure_dir(Path(args.results) / checkpoint.parent.name / folder, "--results")
    table = prediction_table(*window_bounds(log.times, starts, window), probs, class_names, y_true)
    write_predictions(out_dir / "predictions.csv", table)
    if y_true is None:
        with writing(out_dir / "metrics.json"):
            (out_dir / "metrics.json").unlink(missing_ok=True)  # an earlier labelled prediction's metrics do not describe this one
    counts = table["predicted_class"].value_counts()
    used = checkpoint if len(checkpoints) == 1 else f"the mean probabilities of {len(checkpoints)} checkpoints ({args.checkpoint})"
    print(f"Predicted {len(starts)} windows of {window} rows (stride {stride}) from {path} with {used}", flush=True)
    print("Predicted classes: " + ", ".join(f"{name} {n}" for name, n in counts.items()), flush=True)
    if y_true is not None:
        report = classification_report(y_true, probs.argmax(1), len(class_names))
        metrics = {
            "checkpoint": ",".join(str(c) for c in checkpoints),
            "data": str(path),
            "windows": int(len(starts)),
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            **diagnosis_fields(report, class_names, normal),
        }
        write_json(out_dir / "metrics.json", metrics)
        print(format_report(report, class_names, normal), flush=True)
        print(f"Accuracy {report['accuracy']:.2%} | macro-F1 {report['macro_f1']:.4f}", flush=True)
    print(f"-> {out_dir / 'predictions.csv'}", flush=True)
    return 0


def csv_settings(args, trained: dict) -> argparse.Namespace:
    """How to read the log: the flags given now, else those the model was trained with (its
    time and label columns, its sensor list, its missing-value rule)."""
    defaults = {dest: flag.action.default for dest, flag in flag_table().items()}
    return argparse.Namespace(**{flag: getattr(args, flag) if getattr(args, flag) != defaults[flag] else trained.get(flag)
                                 for flag in ("time_col", "label_col", "feature_cols", "missing", "duplicates", "max_gap")})  # fmt: skip


def _trained_columns(log, channels: list[str], path: Path) -> np.ndarray:
    """The log's sensor values in the trained column order; missing or extra sensors are refused."""
    missing = [c for c in channels if c not in log.channels]
    extra = [c for c in log.channels if c not in channels]
    if missing:
        raise UserError(f"--data_path: {path} lacks the sensor column(s) {', '.join(missing)} that the model was trained on")
    if extra:
        raise UserError(
            f"--data_path: {path} has sensor column(s) {', '.join(extra)} that the model was not trained on; leave them out "
            f"with --feature_cols {','.join(channels)}"
        )
    order = [log.channels.index(c) for c in channels]
    return log.values[:, order]


def _known_labels(labels: list[str] | None, class_names: list[str], label_col: str, path: Path) -> np.ndarray | None:
    """Class indices when the log's labels are the model's classes; None otherwise (with a note)."""
    if labels is None:
        return None
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({label for label in labels if label not in lookup})
    if unknown:
        print(
            f"note: column '{label_col}' of {path} holds classes the model does not know ({', '.join(unknown[:3])}); no metrics "
            "(a 0/1 ground truth needs --fault_inventory)",
            flush=True,
        )
        return None
    return np.array([lookup[label] for label in labels], dtype=np.int64)
