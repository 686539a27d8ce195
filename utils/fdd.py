"""Fault detection and diagnosis (FDD) figures and the end-of-test text report.

Building operators judge an AHU fault detector by three numbers rather than by accuracy: how
often a healthy unit raises an alarm (false-alarm rate), how many faults raise any alarm at all
(detection rate), and, of the alarms on faulty units, how many name the right fault (diagnosis
accuracy). All three are read off the confusion matrix once the fault-free class is known.

Pure numpy (no torch, no scikit-learn) so the report can be rebuilt from metrics.json alone.
"""

from __future__ import annotations

import math

import numpy as np

from utils.errors import UserError
from utils.metrics import per_class

# Class names that mean "no fault", compared case-insensitively after trimming blanks.
NORMAL_NAMES = ("normal", "fault-free", "fault free", "0")

MAX_WIDTH = 120  # every report line fits a CI log / a 120-column terminal
NO_NORMAL_LINE = "FDD rates (false alarm, detection, diagnosis) need a fault-free class (none found by name): pass --normal_class NAME"


def _as_confusion(confusion) -> np.ndarray:
    """A KxK matrix of non-negative whole counts; anything else is a caller bug, not a user mistake."""
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (K x K), got shape {cm.shape}")
    if cm.size and (not np.all(np.isfinite(cm)) or np.any(cm < 0) or np.any(cm != np.round(cm))):
        raise ValueError("confusion matrix must hold non-negative whole counts")
    return cm.astype(np.int64)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den > 0 else None


def fdd_rates(confusion, normal: int | None) -> dict:
    """False-alarm, detection and diagnosis rates, with the counts behind them.

    ``confusion`` has true classes as rows and predicted classes as columns; ``normal`` is the
    index of the fault-free class. Every value is a plain int/float/None, so the dict goes
    straight into metrics.json. A rate is None when its denominator is zero (e.g. no normal
    windows in the test set): 0/0 is "not measured", which must not read as 0% or 100%.

    With ``normal=None`` the three rates and all the counts that depend on which class is healthy
    are None too; ``normal_class`` is always present (None here) so a reader of metrics.json can
    tell "no fault-free class" from "a fault-free class with no windows". ``windows`` is the total.
    """
    cm = _as_confusion(confusion)
    k = cm.shape[0]
    out: dict = {"normal_class": normal, "windows": int(cm.sum())}
    keys = ("normal_windows", "false_alarms", "faulty_windows", "detected", "missed", "correctly_diagnosed")
    if normal is None:
        out.update(dict.fromkeys(keys))
        out.update(false_alarm_rate=None, detection_rate=None, diagnosis_accuracy=None)
        return out
    if isinstance(normal, bool) or not isinstance(normal, int | np.integer) or not 0 <= normal < k:
        raise ValueError(f"normal class index {normal!r} is outside 0..{k - 1}")
    normal = int(normal)
    fault = np.ones(k, dtype=bool)
    fault[normal] = False
    normal_windows = int(cm[normal].sum())
    false_alarms = int(cm[normal, fault].sum())
    faulty_windows = int(cm[fault].sum())
    detected = int(cm[np.ix_(fault, fault)].sum())  # a fault called any fault, right or wrong
    missed = int(cm[fault, normal].sum())
    correctly_diagnosed = int(np.diag(cm)[fault].sum())
    out.update(
        normal_class=normal,
        normal_windows=normal_windows,
        false_alarms=false_alarms,
        faulty_windows=faulty_windows,
        detected=detected,
        missed=missed,
        correctly_diagnosed=correctly_diagnosed,
        false_alarm_rate=_ratio(false_alarms, normal_windows),
        detection_rate=_ratio(detected, faulty_windows),
        diagnosis_accuracy=_ratio(correctly_diagnosed, detected),
    )
    return out


def diagnosis_fields(report: dict, class_names: list[str], normal: int | None) -> dict:
    """The per-class, confusion-matrix and fault-detection part of every metrics.json (test,
    --ensemble, --predict), from a classification report."""
    fdd = fdd_rates(report["confusion_matrix"], normal)
    return {
        "per_class": per_class(report, class_names),
        "confusion_matrix": report["confusion_matrix"],
        "class_names": list(class_names),
        "normal_class": None if normal is None else class_names[normal],
        "false_alarm_rate": fdd["false_alarm_rate"],
        "detection_rate": fdd["detection_rate"],
        "diagnosis_accuracy": fdd["diagnosis_accuracy"],
        "fault_detection": fdd,
    }


def find_normal_class(class_names: list[str], requested: str | None) -> int | None:
    """Index of the fault-free class: the one ``--normal_class`` names, else one named like "normal".

    An explicit request that matches nothing is a user mistake (UserError), because silently
    reporting no FDD rates would hide the typo. Without a request, a missing or ambiguous match
    (e.g. both "normal" and "0") gives None: the report then says to pass --normal_class.
    """
    names = [str(n) for n in class_names]
    if requested is not None:
        if requested in names:
            return names.index(requested)
        folded = [i for i, n in enumerate(names) if n.casefold() == requested.casefold()]
        if len(folded) == 1:
            return folded[0]
        available = ", ".join(repr(n) for n in names) or "none"
        why = "matches several classes case-insensitively" if folded else "is not a class"
        raise UserError(f"--normal_class {requested!r} {why}; the classes are: {available}")
    found = [i for i, n in enumerate(names) if n.strip().casefold() in NORMAL_NAMES]
    return found[0] if len(found) == 1 else None


def _clean(name: str, width: int | None = None) -> str:
    """One-line name (no tabs/newlines to break the columns), shortened with '...' to ``width``."""
    text = "".join(c if c.isprintable() else " " for c in str(name))
    if width is not None and len(text) > width:
        text = text[: max(width - 3, 1)] + "..."
    return text


def _num(value, undefined: bool = False) -> str:
    if undefined or value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def _percent(rate: float) -> str:
    """Two decimals, but never rounds a non-zero rate to 0.00% or an imperfect one to 100.00%."""
    if 0 < rate < 0.00005:
        return "<0.01%"
    if 0.99995 <= rate < 1:
        return ">99.99%"
    return f"{100 * rate:.2f}%"


def _table(report: dict, names: list[str], normal: int | None, cm: np.ndarray) -> list[str]:
    k = len(names)
    support = np.asarray(report["support"], dtype=np.int64)
    predicted = cm.sum(axis=0)
    idx_w = max(1, len(str(k - 1)))
    sup_w = max(len("support"), len(str(int(support.sum()))))
    budget = MAX_WIDTH - (2 + idx_w + 2 + 3 * 11 + 2 + sup_w)  # what the other columns leave for the name
    names = [_clean(n, budget) for n in names]
    name_w = max(len("class"), len("macro average"), *(len(n) for n in names))
    head = f"  {'#':>{idx_w}}  {'class':<{name_w}}  {'precision':>9}  {'recall':>9}  {'F1':>9}  {'support':>{sup_w}}"
    lines = ["Per-class test results" + (" (* = fault-free class)" if normal is not None else ""), head]
    lines.append("  " + "-" * (len(head) - 2))
    undefined_seen = False
    for i, name in enumerate(names):
        no_pred, no_true = predicted[i] == 0, support[i] == 0
        undefined_seen |= bool(no_pred or no_true)
        mark = "*" if i == normal else " "
        lines.append(
            f"{mark} {i:>{idx_w}}  {name:<{name_w}}  {_num(report['precision'][i], no_pred):>9}  "
            f"{_num(report['recall'][i], no_true):>9}  {_num(report['f1'][i], no_pred and no_true):>9}  {int(support[i]):>{sup_w}}"
        )
    lines.append("  " + "-" * (len(head) - 2))
    present = (support + predicted) > 0  # the classes utils.metrics averages over
    macro_p = report.get("macro_precision", float(np.mean(np.asarray(report["precision"])[present])) if present.any() else 0.0)
    macro_r = report.get("macro_recall", float(np.mean(np.asarray(report["recall"])[present])) if present.any() else 0.0)
    pad = " " * (idx_w + 2)
    lines.append(
        f"  {pad}{'macro average':<{name_w}}  {_num(macro_p):>9}  {_num(macro_r):>9}  {_num(report['macro_f1']):>9}  "
        f"{int(support.sum()):>{sup_w}}"
    )
    lines.append(f"  {pad}{'accuracy':<{name_w}}  {'':>9}  {'':>9}  {_num(report['accuracy']):>9}  {int(support.sum()):>{sup_w}}")
    if undefined_seen:
        lines.append("  - = undefined (0/0): no test windows of that class, or none predicted as it")
    return lines


def _matrix(cm: np.ndarray, names: list[str], normal: int | None) -> list[str]:
    """Columns are class indices (the table above is the legend); rows also carry a short name."""
    k = cm.shape[0]
    idx_w = max(1, len(str(k - 1)))
    col_w = max(len(str(int(cm.max()))) if cm.size else 1, idx_w) + 2
    cols_per_block = max(1, (MAX_WIDTH - (2 + idx_w + 2 + 12)) // col_w)  # a row name gets >= 12 columns
    lines = ["Confusion matrix (rows = true class, columns = predicted class, by # in the table above)"]
    for start in range(0, k, cols_per_block):
        cols = range(start, min(k, start + cols_per_block))
        name_w = max(len("true"), min(max((len(n) for n in names), default=0), MAX_WIDTH - (2 + idx_w + 1) - col_w * len(cols)))
        if k > cols_per_block:
            lines.append(f"  predicted classes {cols[0]}..{cols[-1]}")
        lines.append(f"  {'':>{idx_w}} {'true':<{name_w}}" + "".join(f"{j:>{col_w}}" for j in cols))
        for i in range(k):
            mark = "*" if i == normal else " "
            label = f"{mark} {i:>{idx_w}} {_clean(names[i], name_w):<{name_w}}"
            lines.append(label + "".join(f"{int(cm[i, j]):>{col_w}}" for j in cols))
    return lines


# (label, rate key, why it can be undefined, the counts behind it)
RATE_LINES = (
    ("False-alarm rate", "false_alarm_rate", "no normal windows in the test set",
     "{false_alarms} of {normal_windows} normal windows flagged as a fault"),
    ("Detection rate", "detection_rate", "no faulty windows in the test set",
     "{detected} of {faulty_windows} faulty windows flagged as a fault, {missed} missed as normal"),
    ("Diagnosis accuracy among detected faults", "diagnosis_accuracy", "no fault was detected",
     "{correctly_diagnosed} of {detected} detected faults given their own class"),
)  # fmt: skip


def _fdd_lines(rates: dict, names: list[str]) -> list[str]:
    normal = rates["normal_class"]
    if normal is None:
        return [NO_NORMAL_LINE]
    lines = [f"Fault detection and diagnosis (fault-free class: {normal} {_clean(names[normal], 60)!r})"]
    for label, key, undefined, counts in RATE_LINES:
        rate = rates[key]
        lines.append(f"  {label}: n/a ({undefined})" if rate is None else f"  {label}: {_percent(rate)} ({counts.format(**rates)})")
    return lines


def format_report(report: dict, class_names: list[str], normal: int | None) -> str:
    """The text shown at the end of testing: per-class table, confusion matrix, FDD rates.

    Plain ASCII framing and lines of at most 120 characters, so it reads the same in a terminal
    and in a CI log (class names too long for that are shortened with '...'; metrics.json keeps them whole).
    Undefined per-class figures (0/0) print as '-' rather than a misleading 0.
    """
    cm = _as_confusion(report["confusion_matrix"])
    if len(class_names) != cm.shape[0] or len(report["support"]) != cm.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {cm.shape[0]}x{cm.shape[0]} confusion matrix")
    names = [_clean(n) for n in class_names]
    rates = fdd_rates(cm, normal)
    lines = _table(report, names, normal, cm) + [""] + _matrix(cm, names, normal) + [""] + _fdd_lines(rates, class_names)
    return "\n".join(lines)
