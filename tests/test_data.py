"""Simulator, leak-free split, train-only scaling, formats and the CSV round trip."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data_provider.data_factory import build_data
from data_provider.graph import correlation_adjacency
from data_provider.scaling import MinMaxScaler, StandardScaler
from data_provider.simulator import FAULTS, SENSORS, simulate_ahu
from data_provider.sources import load_table
from data_provider.windows import Segment, blocked_split, find_segments
from tests.conftest import make_args, split_rows
from utils.errors import UserError


def test_simulator_is_seeded_and_has_the_promised_classes_and_channels():
    a, b = simulate_ahu(1, seed=3), simulate_ahu(1, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(simulate_ahu(1, seed=4))
    assert list(a.columns) == ["Datetime", *SENSORS, "label"]
    assert set(a["label"]) == set(FAULTS) and len(FAULTS) >= 7  # normal + at least six faults
    assert len(a) == len(FAULTS) * 1440 and a[SENSORS].notna().all().all()


def test_faults_leave_a_physical_signature():
    frame = simulate_ahu(3, seed=0)
    by_class = frame.groupby("label")
    night = frame[frame["Datetime"].dt.hour < 5]  # OA damper commanded shut
    oa_share = ((night["MA_TEMP"] - night["RA_TEMP"]) / (night["OA_TEMP"] - night["RA_TEMP"])).groupby(night["label"]).median()
    assert oa_share["oa_damper_stuck_75"] > oa_share["oa_damper_stuck_25"] > oa_share["normal"]
    assert by_class["SF_SPD_DM"].mean()["supply_fan_degraded_70"] > by_class["SF_SPD_DM"].mean()["normal"] + 5
    cooling = by_class["CHWC_VLV_DM"].mean()
    assert cooling["heating_valve_leak_40"] > cooling["heating_valve_leak_10"] > cooling["normal"]


def test_blocked_split_never_shares_a_row_between_splits():
    labels = np.repeat([0, 1, 0, 2], [500, 400, 410, 700])
    segments = find_segments(labels)
    assert [(s.start, s.end, s.label) for s in segments] == [(0, 500, 0), (500, 900, 1), (900, 1310, 0), (1310, 2010, 2)]
    split = blocked_split(segments, length=40, stride=15, block_windows=3)
    split_rows(split, 40)
    for idx in split.values():  # no window crosses a segment edge or mixes labels
        for start, label in zip(idx.starts, idx.labels):
            assert (labels[start : start + 40] == label).all()
    for name in ("train", "val", "test"):
        assert set(split[name].labels.tolist()) == {0, 1, 2}


def test_block_pattern_is_three_train_then_val_then_test():
    split = blocked_split([Segment(0, 1000, 0)], length=10, stride=10, block_windows=2)
    block_of = {int(s) // 20: name for name, idx in split.items() for s in idx.starts}
    assert [block_of[b] for b in range(10)] == ["train", "train", "train", "val", "test"] * 2


def test_folds_deal_the_pattern_later_so_every_block_is_tested_once():
    # One segment of 6 blocks (a day of 4-hour blocks): fold k deals pattern[(i + k) % 5] to block i.
    blocks = {}
    for fold in range(5):
        split = blocked_split([Segment(0, 120, 0)], length=10, stride=10, block_windows=2, fold=fold)
        blocks[fold] = {int(s) // 20: name for name, idx in split.items() for s in idx.starts}
    pattern = ["train", "train", "train", "val", "test"]
    for fold, dealt in blocks.items():
        assert [dealt[b] for b in range(6)] == [pattern[(b + fold) % 5] for b in range(6)]
    tested = sorted(b for dealt in blocks.values() for b, name in dealt.items() if name == "test")
    assert tested == list(range(6))  # folds 0-4 test blocks 4, 3, 2, 1 and 0 + 5
    assert blocks[0] == {int(s) // 20: n for n, i in blocked_split([Segment(0, 120, 0)], 10, 10, 2).items() for s in i.starts}


def test_time_gaps_cut_segments():
    from data_provider.csv_source import lay_on_grid

    times = pd.date_range("2024-01-01", periods=6, freq="min").to_numpy().copy()
    times[3:] += np.timedelta64(1, "h")
    _, breaks, _ = lay_on_grid(times, np.zeros(6), 60.0, None, Path("log.csv"))
    assert [(s.start, s.end) for s in find_segments(np.zeros(6, int), breaks)] == [(0, 3), (3, 6)]


def test_rows_are_laid_on_the_grid_of_the_median_step():
    from data_provider.csv_source import lay_on_grid, sampling_interval

    minutes = np.array([0, 1, 2, 4, 5, 6, 16, 17, 17.5, 18, 19.05, 20])  # a 1-row gap, a 9-row gap, a row off the grid, jitter
    times = (np.datetime64("2024-01-01T00:00") + (minutes * 60e9).astype("timedelta64[ns]")).astype("datetime64[ns]")
    assert sampling_interval(times) == 60.0  # the median step
    positions, breaks, sampling = lay_on_grid(times, np.zeros(len(times)), sampling_interval(times), 180.0, Path("log.csv"))
    assert positions.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # one grid row inserted in the 2-minute step
    assert np.flatnonzero(breaks).tolist() == [7, 9, 10]  # after the 10-minute gap, around the row at 17.5
    assert (sampling.interval_s, sampling.filled_gaps, sampling.filled_rows, sampling.cut_gaps, sampling.off_grid) == (60, 1, 1, 1, 2)
    assert sampling.missing_rows == 9
    line = sampling.describe(breaks, 3, "ffill")
    assert line == ("every 1 min (median step); 1 gap up to --max_gap 3 min filled with 1 row by --missing ffill; 1 gap longer "
                    "than 3 min and 2 steps off the grid cut the log (9 rows missing); 4 stretches without a gap, 2 of them "
                    "shorter than a window of 3 rows: 3 rows unused")  # fmt: skip


def test_scalers_are_fitted_on_training_rows_only():
    args = make_args("--data", "Classification", "--derived_signals", "off")  # the table's own sensors, compared below
    data = build_data(args)
    table = load_table(args)
    train_rows = np.unique((data.train.starts[:, None] + np.arange(args.step)).ravel())
    expected = StandardScaler().fit(table.values[train_rows]).transform(table.values)
    np.testing.assert_allclose(data.train.values.numpy(), expected, rtol=1e-5, atol=1e-5)
    scaled_train = data.train.values.numpy()[train_rows]
    np.testing.assert_allclose(scaled_train.mean(0)[scaled_train.std(0) > 0], 0, atol=1e-4)


def test_minmax_maps_the_training_range_to_minus_one_one_and_constants_to_zero():
    rows = np.array([[0.0, 5.0], [10.0, 5.0]])
    scaler = MinMaxScaler().fit(rows)
    np.testing.assert_allclose(scaler.transform(np.array([[5.0, 5.0], [20.0, 7.0]])), [[0.0, 0.0], [3.0, 0.0]])


@pytest.mark.parametrize("fmt, shapes", [
    ("Classification", [(4, 32, 20)]),  # ResNet1D and DualGAFNet: 13 sensors + 7 derived signals by default
    ("DualGAF", [(4, 20, 8, 8), (4, 20, 8, 8), (4, 32, 20)]),
    ("GNN", [(4, 13, 32), (13, 13)]),
])  # fmt: skip
def test_batch_objects_give_each_format_its_inputs(tiny_data, fmt, shapes):
    batch = tiny_data(fmt).train[np.arange(4)]
    assert batch.num_samples == 4 and batch.labels.dtype == torch.long
    assert [tuple(t.shape) for t in batch.inputs()] == shapes


def test_graph_links_correlated_sensors_only():
    rng = np.random.default_rng(0)
    base = rng.normal(size=500)
    rows = np.stack([base, base + 0.1 * rng.normal(size=500), rng.normal(size=500), np.ones(500)], 1)
    adjacency = correlation_adjacency(rows, 0.5).numpy()
    assert adjacency[0, 1] > 0 and adjacency[0, 2] == 0 and adjacency[3, 3] == 1.0
    np.testing.assert_allclose(adjacency, adjacency.T)


def test_exported_csv_loads_back_as_the_same_table(tmp_path):
    from exp.launch import main

    path = tmp_path / "ahu.csv"
    assert main(["--sim_days", "1", "--export_data", str(path)]) == 0
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["Datetime", *SENSORS, "label"]
    simulated = load_table(make_args())
    loaded = load_table(make_args("--root_path", str(tmp_path), "--data_path", "ahu.csv"))
    assert loaded.channels == simulated.channels
    np.testing.assert_allclose(loaded.values, simulated.values, atol=1e-9)
    assert [loaded.class_names[i] for i in loaded.labels] == [simulated.class_names[i] for i in simulated.labels]


def test_a_step_too_long_for_the_split_is_a_user_error():
    with pytest.raises(UserError, match="--step 700"):
        build_data(make_args("--step", "700"))


@pytest.mark.parametrize("split_name", ["blocked", "chronological"])
def test_train_stride_adds_training_windows_inside_the_training_rows_only(split_name):
    from data_provider.windows import chronological_split

    labels = np.repeat([0, 1, 0, 2], [500, 400, 410, 700])
    segments = find_segments(labels)
    cut = {"blocked": lambda **kw: blocked_split(segments, length=40, stride=20, block_windows=3, **kw),
           "chronological": lambda **kw: chronological_split(segments, length=40, stride=20, **kw)}[split_name]  # fmt: skip
    sparse, dense = cut(), cut(train_stride=5)
    for name in ("val", "test"):  # the scored windows do not move
        np.testing.assert_array_equal(dense[name].starts, sparse[name].starts)
        np.testing.assert_array_equal(dense[name].labels, sparse[name].labels)
    assert len(dense["train"].starts) >= 3 * len(sparse["train"].starts)
    assert set(sparse["train"].starts.tolist()) <= set(dense["train"].starts.tolist())
    split_rows(dense, 40)
    for start, label in zip(dense["train"].starts, dense["train"].labels):
        assert (labels[start : start + 40] == label).all()


def test_train_stride_reaches_the_windows_through_build_data():
    sparse, dense = (
        build_data(make_args("--data", "Classification")),
        build_data(make_args("--data", "Classification", "--train_stride", "4")),
    )
    assert len(dense.train) > 2 * len(sparse.train)
    for name in ("val", "test"):
        np.testing.assert_array_equal(getattr(dense, name).starts, getattr(sparse, name).starts)
    np.testing.assert_array_equal(dense.train.values.numpy(), sparse.train.values.numpy())  # same rows, same scaler
