"""Optional experiment tracking: ``--tensorboard`` writes every epoch's figures as scalars.

TensorBoard is not a dependency of the runner: it is imported only when asked for, and a run
that asks without it installed stops before anything is written, saying how to install it.
"""

from __future__ import annotations

from pathlib import Path

from utils.errors import UserError

# history.csv column -> TensorBoard tag
SCALARS = {
    "train_loss": "loss/train (loss preset)",
    "val_loss": "loss/validation (cross-entropy)",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/validation",
    "val_macro_f1": "macro_f1/validation",
    "lr": "optimizer/learning_rate",
    "total_updates": "optimizer/updates",
    "effective_batch_size": "accumulation/effective_batch_size",
}


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "--tensorboard: the tensorboard package is not installed (pip install tensorboard), or leave out --tensorboard"
        ) from None
    return SummaryWriter


def check_available(args) -> None:
    """Fail at start, before any output, when --tensorboard cannot work."""
    if getattr(args, "tensorboard", False):
        _summary_writer()


class NullTracker:
    def log_epoch(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(NullTracker):
    """Scalars per epoch, stepped by the epoch number, in <results>/<run>/tensorboard."""

    def __init__(self, folder: Path):
        self.writer = _summary_writer()(log_dir=str(folder))

    def log_epoch(self, row: dict) -> None:
        for column, tag in SCALARS.items():
            if row.get(column) is not None:
                self.writer.add_scalar(tag, float(row[column]), global_step=int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def start_tracker(args, results_dir: Path, is_writer: bool) -> NullTracker:
    if getattr(args, "tensorboard", False) and is_writer:
        return TensorBoardTracker(results_dir / "tensorboard")
    return NullTracker()
