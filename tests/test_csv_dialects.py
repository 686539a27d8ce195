"""Logs as building automation systems export them: the LBNL SZCAV file re-saved with semicolons
and decimal commas, with tabs, with overlapping exports, with a repeated hour, with a gap and with
a row off the sampling grid must give exactly the windows of the original (or of the original with
those rows dropped), or be refused in one line naming the cause."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from data_provider.csv_source import Dialect, read_sensor_csv, sniff_dialect
from data_provider.data_factory import build_data
from tests.conftest import make_args
from tests.test_cli import run_cli
from tests.test_csv import GROUND_TRUTH, LBNL, needs_lbnl

NAME = "SZCAV"
pytestmark = needs_lbnl


@pytest.fixture(scope="module")
def original():
    frame = pd.read_csv(LBNL / f"{NAME}.csv", dtype=str, keep_default_na=False)
    return frame, windows(LBNL)


def args_for(folder, *flags):
    return make_args("--root_path", str(folder), "--data_path", f"{NAME}.csv", "--fault_inventory", f"{NAME}-faults.csv",
                     "--label_col", GROUND_TRUTH, "--step", "96", *flags)  # fmt: skip


def windows(folder, *flags):
    data = build_data(args_for(folder, *flags))
    return {name: (split.starts, split.labels, split[np.arange(len(split))].x) for name, split in
            (("train", data.train), ("val", data.val), ("test", data.test))}  # fmt: skip


def assert_same_windows(got, want):
    for split in want:
        np.testing.assert_array_equal(got[split][0], want[split][0])
        np.testing.assert_array_equal(got[split][1], want[split][1])
        torch.testing.assert_close(got[split][2], want[split][2], rtol=0, atol=0)


def resave(tmp_path, frame: pd.DataFrame, **to_csv) -> None:
    frame.to_csv(tmp_path / f"{NAME}.csv", index=False, **to_csv)
    shutil.copy(LBNL / f"{NAME}-faults.csv", tmp_path / f"{NAME}-faults.csv")


def with_decimal(frame: pd.DataFrame, decimal: str) -> pd.DataFrame:
    """The same cells with the decimal mark swapped in every number (the digits stay as written)."""
    if decimal == ".":
        return frame
    number = r"^[-+]?\d*\.\d+$"
    return frame.apply(lambda col: col.where(~col.str.match(number), col.str.replace(".", decimal, regex=False)))


def shifted(frame: pd.DataFrame, rows: slice, by: float) -> tuple[pd.DataFrame, str]:
    """Those rows again, with ``by`` added to a sensor that has a number in each of them."""
    column = next(c for c in frame.columns[1:] if c != GROUND_TRUTH and pd.to_numeric(frame[c].iloc[rows], errors="coerce").notna().all())
    again = frame.iloc[rows].copy()
    again[column] = (pd.to_numeric(again[column]) + by).map(repr)
    return pd.concat([frame, again]), column


@pytest.mark.parametrize("sep, decimal", [(";", ","), ("\t", "."), ("\t", ",")])
def test_separator_and_decimal_mark_are_detected_and_give_the_original_windows(tmp_path, original, sep, decimal):
    frame, want = original
    resave(tmp_path, with_decimal(frame, decimal), sep=sep)
    assert sniff_dialect(tmp_path / f"{NAME}.csv") == Dialect(sep, decimal)
    assert_same_windows(windows(tmp_path), want)
    summary = build_data(args_for(tmp_path)).summary()
    assert f"{NAME}.csv ({Dialect(sep, decimal).describe()})" in summary  # the start-up summary says how it was read


def test_the_inventory_is_read_with_its_own_separator(tmp_path, original):
    frame, want = original
    resave(tmp_path, frame)
    pd.read_csv(LBNL / f"{NAME}-faults.csv", dtype=str).to_csv(tmp_path / f"{NAME}-faults.csv", index=False, sep=";")
    assert_same_windows(windows(tmp_path), want)


def test_a_wrong_separator_is_refused_naming_the_likely_one(tmp_path, original):
    frame, _ = original
    resave(tmp_path, with_decimal(frame, ","), sep=";")
    outputs = ("--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res"))
    done = run_cli("--root_path", str(tmp_path), "--data_path", f"{NAME}.csv", "--fault_inventory", f"{NAME}-faults.csv",
                   "--label_col", GROUND_TRUTH, "--csv_sep", "tab", "--csv_decimal", "comma", *outputs)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "reads as one column" in done.stderr and "it looks semicolon-separated: pass --csv_sep semicolon" in done.stderr
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "res").exists()


def test_exact_duplicate_rows_of_overlapping_exports_are_dropped_with_a_note(tmp_path, original, capsys):
    frame, want = original
    resave(tmp_path, pd.concat([frame, frame.iloc[4000:5000]]))
    got = windows(tmp_path)
    assert "1000 exact duplicate rows dropped (the first at " in capsys.readouterr().out
    assert_same_windows(got, want)


def test_conflicting_repeated_times_are_refused_unless_a_rule_keeps_one_row(tmp_path, original):
    frame, want = original
    both, column = shifted(frame, slice(4000, 5000), 1.0)  # the same times with another reading
    resave(tmp_path, both)
    outputs = ("--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res"))
    common = ("--root_path", str(tmp_path), "--data_path", f"{NAME}.csv", "--fault_inventory", f"{NAME}-faults.csv",
              "--label_col", GROUND_TRUTH, *outputs)  # fmt: skip
    done = run_cli(*common)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    first = pd.Timestamp(frame.iloc[4000, 0])
    assert f"1000 rows repeat the time of an earlier row with other values (the first at {first})" in done.stderr
    assert "--duplicates first|last|mean" in done.stderr and "daylight saving" not in done.stderr  # 1000 minutes, not an hour
    assert not (tmp_path / "ckpt").exists()
    assert_same_windows(windows(tmp_path, "--duplicates", "first"), want)  # the original rows come first
    read = lambda folder, rule: read_sensor_csv(folder / f"{NAME}.csv", None, GROUND_TRUTH, None, folder / f"{NAME}-faults.csv",  # noqa: E731
                                                "ffill", duplicates=rule)  # fmt: skip
    reference = read(LBNL, None)
    sensor = reference.channels.index(column)
    for rule, moved in (("first", 0.0), ("last", 1.0), ("mean", 0.5)):
        table = read(tmp_path, rule)
        expected = reference.values.copy()
        expected[4000:5000, sensor] += moved
        np.testing.assert_allclose(table.values, expected, rtol=0, atol=1e-9)
        assert table.labels == reference.labels and np.array_equal(table.times, reference.times)


def test_a_repeated_hour_is_named_as_the_daylight_saving_hour(tmp_path, original):
    frame, _ = original
    resave(tmp_path, shifted(frame, slice(3000, 3060), 0.5)[0])
    done = run_cli("--root_path", str(tmp_path), "--data_path", f"{NAME}.csv", "--fault_inventory", f"{NAME}-faults.csv",
                   "--label_col", GROUND_TRUTH, "--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res"))  # fmt: skip
    assert done.returncode == 2
    assert "60 rows repeat the time" in done.stderr and "daylight saving time ends in a log kept in local time" in done.stderr


GAP = slice(3000, 3020)  # twenty minutes inside one day, so inside one class


def blanked(frame: pd.DataFrame, rows) -> pd.DataFrame:
    """Those rows kept with every sensor cell empty (time and label stay)."""
    out = frame.copy()
    sensors = [i for i, c in enumerate(frame.columns) if i > 0 and c != GROUND_TRUTH]
    out.iloc[rows, sensors] = ""
    return out


@pytest.mark.parametrize("missing", ["ffill", "interpolate"])
def test_a_gap_up_to_max_gap_is_filled_as_empty_cells_would_be(tmp_path, original, capsys, missing):
    frame, want = original
    resave(tmp_path, frame.drop(frame.index[GAP]))
    got = windows(tmp_path, "--max_gap", "30min", "--missing", missing)
    assert f"1 gap up to --max_gap 30 min filled with 20 rows by --missing {missing}" in capsys.readouterr().out
    (tmp_path / "blank").mkdir()
    resave(tmp_path / "blank", blanked(frame, GAP))
    assert_same_windows(got, windows(tmp_path / "blank", "--missing", missing))
    for split in want:  # the windows of the original file, at the same rows
        np.testing.assert_array_equal(got[split][0], want[split][0])
        np.testing.assert_array_equal(got[split][1], want[split][1])


def test_a_longer_gap_cuts_the_log_where_dropped_rows_would(tmp_path, original, capsys):
    frame, want = original
    resave(tmp_path, frame.drop(frame.index[GAP]))
    got = windows(tmp_path, "--missing", "drop")  # drop: the file's error cells cut it in the reference too
    # the file itself has 3 gaps of whole days between its weeks
    assert "every 1 min (median step); 4 gaps longer than 1 min cut the log (10100 rows missing); " in capsys.readouterr().out
    (tmp_path / "blank").mkdir()
    resave(tmp_path / "blank", blanked(frame, GAP))
    assert_same_windows(got, windows(tmp_path / "blank", "--missing", "drop"))
    assert sum(len(got[s][0]) for s in got) < sum(len(want[s][0]) for s in want)  # windows across the gap are gone


def test_a_row_off_the_grid_stands_alone(tmp_path, original, capsys):
    frame, _ = original
    late = frame.copy()
    late.iloc[3000, 0] = "3/15/2017 2:00:30"  # half a minute off the minute grid
    resave(tmp_path, late)
    got = windows(tmp_path, "--missing", "drop")
    assert "2 steps off the grid cut the log" in capsys.readouterr().out
    (tmp_path / "blank").mkdir()
    resave(tmp_path / "blank", blanked(frame, [3000]))
    want = windows(tmp_path / "blank", "--missing", "drop")  # the same log without that row
    for split in want:
        starts = got[split][0]
        np.testing.assert_array_equal(starts - (starts > 3000), want[split][0])  # no window holds the row
        np.testing.assert_array_equal(got[split][1], want[split][1])
        torch.testing.assert_close(got[split][2], want[split][2], rtol=0, atol=0)
