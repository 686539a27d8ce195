"""Training-curves figure (separate training-loss / validation-CE axes, integer epochs) and log-mode progress timing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from utils.plots import plot_training_curves, training_curves_figure
from utils.progress import EpochProgress


def history(n: int = 3, **override) -> list[dict]:
    rows = []
    for e in range(1, n + 1):
        row = {"epoch": e, "train_loss": 1.5 / e, "train_acc": 0.3 + 0.1 * e, "val_loss": 1.0 / e, "val_acc": 0.35 + 0.1 * e,
               "val_macro_f1": 0.3 + 0.1 * e, "lr": 1e-3 / e, "updates": 10 * e, "effective_batch_size": 16}  # fmt: skip
        row.update({k: v(e) if callable(v) else v for k, v in override.items()})
        rows.append(row)
    return rows


def axis_with_line(fig, label: str):
    hits = [ax for ax in fig.axes if label in [line.get_label() for line in ax.get_lines()]]
    assert len(hits) == 1, f"{label!r} drawn on {len(hits)} axes"
    return hits[0]


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


@pytest.fixture
def close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def test_training_loss_and_validation_cross_entropy_are_on_separately_labelled_axes(close_figures):
    fig = training_curves_figure(history(), loss_name="hvac_similar_optimized")
    train_ax = axis_with_line(fig, "training loss (hvac_similar_optimized)")
    val_ax = axis_with_line(fig, "validation cross-entropy")
    assert train_ax is not val_ax
    assert train_ax.get_ylabel() != val_ax.get_ylabel()
    assert "training loss" in train_ax.get_ylabel() and "hvac_similar_optimized" in train_ax.get_ylabel()
    assert "validation cross-entropy" in val_ax.get_ylabel()
    assert "validation" not in train_ax.get_ylabel() and "training" not in val_ax.get_ylabel()
    assert legend_texts(train_ax) == ["training loss (hvac_similar_optimized)"]
    assert legend_texts(val_ax) == ["validation cross-entropy"]
    assert np.allclose(train_ax.get_lines()[0].get_ydata(), [1.5, 0.75, 0.5])
    assert np.allclose(val_ax.get_lines()[0].get_ydata(), [1.0, 0.5, 1 / 3])


def test_default_loss_label_names_the_preset_generically(close_figures):
    fig = training_curves_figure(history())
    assert "loss preset" in axis_with_line(fig, "training loss (loss preset)").get_ylabel()


def test_accuracy_and_macro_f1_share_a_unit_panel_and_lr_is_log_scaled(close_figures):
    fig = training_curves_figure(history())
    acc_ax = axis_with_line(fig, "train accuracy")
    assert legend_texts(acc_ax) == ["train accuracy", "validation accuracy", "validation macro-F1"]
    assert acc_ax.get_ylim() == pytest.approx((0, 1.02))
    lr_ax = axis_with_line(fig, "learning rate")
    assert lr_ax.get_yscale() == "log" and "learning rate" in lr_ax.get_ylabel()


@pytest.mark.parametrize("n", [1, 3, 12])
def test_every_x_axis_has_integer_epoch_ticks(close_figures, n):
    from matplotlib.ticker import MaxNLocator

    fig = training_curves_figure(history(n))
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator) and ax.get_xlabel() == "epoch"
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert all(lo <= e <= hi for e in range(1, n + 1))


@pytest.mark.parametrize(
    "rows",
    [
        history(1),
        history(3, val_loss=float("nan")),
        history(3, val_loss=lambda e: float("nan") if e == 2 else 1.0 / e),
        history(3, lr=0.0),
        history(3, lr=lambda e: 0.0 if e == 1 else 1e-3),  # warm-up from 0: symlog
        history(3, lr=5e-4),  # constant
        history(1, val_loss=float("nan"), lr=0.0),
    ],
    ids=["one-epoch", "nan-val", "one-nan-val", "lr-zero", "lr-from-zero", "lr-constant", "one-epoch-nan-lr0"],
)
def test_edge_histories_render_to_a_readable_png(tmp_path, rows):
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    path = tmp_path / "training_curves.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an all-NaN or constant series may warn about limits; it must not raise
        plot_training_curves(rows, path, loss_name="focal")
    assert not plt.get_fignums()  # the figure was closed
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.shape[2] in (3, 4)


def test_lr_scale_follows_the_values(close_figures):
    def scale(rows):
        return axis_with_line(training_curves_figure(rows), "learning rate").get_yscale()

    assert scale(history(3, lr=0.0)) == "linear"
    assert scale(history(3, lr=lambda e: 0.0 if e == 1 else 1e-3)) == "symlog"
    assert scale(history(3, lr=float("nan"))) == "linear"


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def log_lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_log_lines_carry_elapsed_and_eta(capsys):
    clock = FakeClock()
    progress = EpochProgress(20, "Epoch 1/30 [GA:2]", mode="log", clock=clock)
    for _ in range(20):
        clock.t += 1.5  # 1.5 s per micro-batch
        progress.update(lambda: "Loss=0.5000")
    progress.close()
    lines = log_lines(capsys)
    assert lines[0] == "Epoch 1/30 [GA:2]:  10% 2/20 [00:03<00:27] Loss=0.5000"
    assert lines[3] == "Epoch 1/30 [GA:2]:  40% 8/20 [00:12<00:18] Loss=0.5000"
    assert lines[-1] == "Epoch 1/30 [GA:2]: 100% 20/20 [00:30<00:00] Loss=0.5000"
    assert len(lines) == 10


def test_log_lines_switch_to_hours_past_an_hour(capsys):
    clock = FakeClock(0.0)
    progress = EpochProgress(4, "Epoch 2/2 [GA:1]", mode="log", every=0.25, clock=clock)
    for _ in range(2):
        clock.t += 1800.0
        progress.update(lambda: "Loss=1")
    assert log_lines(capsys) == ["Epoch 2/2 [GA:1]:  25% 1/4 [30:00<1:30:00] Loss=1", "Epoch 2/2 [GA:1]:  50% 2/4 [1:00:00<1:00:00] Loss=1"]


def test_resumed_epoch_rates_only_the_micro_batches_of_this_process(capsys):
    clock = FakeClock()
    progress = EpochProgress(20, "Epoch 3/30 [GA:2]", mode="log", initial=8, clock=clock)
    clock.t += 5.0  # start-up time before the first micro-batch counts as elapsed
    assert progress.status() == "Epoch 3/30 [GA:2]:  40% 8/20 [00:05<?]"
    assert log_lines(capsys) == []  # nothing printed until a micro-batch is done
    for _ in range(2):
        clock.t += 2.5
        progress.update(lambda: "Loss=0.1")
    # 2 micro-batches in 10 s (not 10 in 10 s): 10 left -> 50 s
    assert log_lines(capsys) == ["Epoch 3/30 [GA:2]:  50% 10/20 [00:10<00:50] Loss=0.1"]


def test_eta_is_zero_when_no_time_has_passed(capsys):
    progress = EpochProgress(2, "E", mode="log", every=0.5, clock=FakeClock())
    progress.update(lambda: "x")
    assert log_lines(capsys) == ["E:  50% 1/2 [00:00<00:00] x"]


def test_postfix_is_built_only_for_printed_lines(capsys):
    calls = []
    progress = EpochProgress(20, "E", mode="log", clock=FakeClock())
    for _ in range(20):
        progress.update(lambda: calls.append(1) or "p")
    assert len(calls) == 10 and len(log_lines(capsys)) == 10


def test_none_mode_prints_nothing_and_bar_mode_still_uses_tqdm(capsys):
    progress = EpochProgress(5, "E", mode="none", clock=FakeClock())
    for _ in range(5):
        progress.update(lambda: "p")
    progress.close()
    assert capsys.readouterr().out == ""
    bar = EpochProgress(5, "E", mode="bar", clock=FakeClock())
    assert bar.bar is not None and bar.bar.total == 5
    for _ in range(5):
        bar.update(lambda: "p")
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "5/5" in captured.err
