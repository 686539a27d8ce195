"""PNG plots. matplotlib is imported here, inside the functions, never on the training path."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(history: list[dict], key: str) -> np.ndarray:
    """One column of the history as floats; a missing or unreadable value becomes NaN (a gap in the line)."""
    out = []
    for row in history:
        try:
            out.append(float(row.get(key)))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return np.asarray(out, dtype=float)


def _integer_epochs(ax, epochs: np.ndarray) -> None:
    """Whole-epoch ticks; the view spans at least two integers, else MaxNLocator falls back to fractional ticks."""
    from matplotlib.ticker import MaxNLocator

    if epochs.size:
        lo, hi = float(np.min(epochs)), float(np.max(epochs))
        pad = 0.5 if hi - lo >= 1 else 1.0
        ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _lr_scale(ax, lr: np.ndarray) -> None:
    """Log scale when every learning rate is positive, symlog when some are 0, linear when none is positive."""
    finite = lr[np.isfinite(lr)]
    positive = finite[finite > 0]
    if positive.size == 0:
        return
    if positive.size == finite.size:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=float(positive.min()))


def training_curves_figure(history: list[dict], loss_name: str | None = None):
    """The training-curves figure: the training loss and the validation cross-entropy on separate panels
    (the training loss preset, e.g. label smoothing or focal loss, is not on the cross-entropy scale),
    accuracy and macro-F1 on one 0..1 panel, and the learning rate."""
    plt = _pyplot()
    epochs = np.asarray([row["epoch"] for row in history], dtype=float)
    train_label = f"training loss ({loss_name or 'loss preset'})"
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (train_ax, val_ax), (acc_ax, lr_ax) = axes
    train_ax.plot(epochs, _series(history, "train_loss"), "o-", color="C0", label=train_label)
    train_ax.set(title="Training loss (mean per sample)", ylabel=train_label)
    val_ax.plot(epochs, _series(history, "val_loss"), "o-", color="C1", label="validation cross-entropy")
    val_ax.set(title="Validation cross-entropy (mean per sample)", ylabel="validation cross-entropy")
    acc_ax.plot(epochs, _series(history, "train_acc"), "o-", label="train accuracy")
    acc_ax.plot(epochs, _series(history, "val_acc"), "o-", label="validation accuracy")
    acc_ax.plot(epochs, _series(history, "val_macro_f1"), "s--", label="validation macro-F1")
    acc_ax.set(title="Accuracy / macro-F1", ylabel="accuracy / macro-F1", ylim=(0, 1.02))
    lr = _series(history, "lr")
    lr_ax.plot(epochs, lr, "o-", color="C2", label="learning rate")
    lr_ax.set(title="Learning rate (end of epoch)", ylabel="learning rate")
    _lr_scale(lr_ax, lr)
    for ax in axes.flat:
        _integer_epochs(ax, epochs)
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_training_curves(history: list[dict], path: Path, loss_name: str | None = None) -> None:
    plt = _pyplot()
    fig = training_curves_figure(history, loss_name=loss_name)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path, title: str) -> None:
    plt = _pyplot()
    cm = np.asarray(matrix)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * k + 3), max(5, 0.7 * k + 2)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
