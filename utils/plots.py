"""PNG plots. matplotlib is imported here, inside the functions, never on the training path."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(history: list[dict], path: Path) -> None:
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    axes[0].set(title="Loss (mean per sample)", xlabel="epoch")
    axes[1].plot(epochs, [r["train_acc"] for r in history], "o-", label="train accuracy")
    axes[1].plot(epochs, [r["val_acc"] for r in history], "o-", label="validation accuracy")
    axes[1].plot(epochs, [r["val_macro_f1"] for r in history], "s--", label="validation macro-F1")
    axes[1].set(title="Accuracy / macro-F1", xlabel="epoch", ylim=(0, 1.02))
    axes[2].plot(epochs, [r["lr"] for r in history], "o-")
    axes[2].set(title="Learning rate (end of epoch)", xlabel="epoch", yscale="log")
    for ax in axes[:2]:
        ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
