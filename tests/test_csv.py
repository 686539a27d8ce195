"""The CSV loader on the real LBNL files and on every kind of bad file."""

import os
from pathlib import Path

import numpy as np
import pytest

from data_provider.data_factory import build_data
from data_provider.sources import load_table
from data_provider.windows import SPLITS, chronological_split, find_segments, random_split
from exp.launch import main
from tests.conftest import ROOT, make_args, split_rows

LBNL = ROOT.parent / "shared" / "data" / "lbnl_ahu"
needs_lbnl = pytest.mark.skipif(not LBNL.is_dir(), reason=f"shared LBNL data not found at {LBNL}")
GROUND_TRUTH = "Fault Detection Ground Truth"


def lbnl_args(name, *flags):
    return make_args("--root_path", str(LBNL), "--data_path", f"{name}.csv", "--fault_inventory", f"{name}-faults.csv",
                     "--label_col", GROUND_TRUTH, "--step", "96", *flags)  # fmt: skip


@needs_lbnl
@pytest.mark.parametrize("name, classes, sensors, note", [
    ("SZCAV", 15, 14, "AHU: Mixed Air Temperature: 90 error"),
    ("SZVAV", 8, 14, "AHU: Supply Air Temperature Heating Set Point: 590 empty"),
    ("MZVAV-2-1", 3, 17, "inventory dates with no faulted rows (ignored): 2007-08-30"),
])  # fmt: skip
def test_each_lbnl_file_loads_with_one_class_per_fault_scenario(name, classes, sensors, note):
    table = load_table(lbnl_args(name))
    assert len(table.class_names) == classes and table.class_names[0] == "normal"
    assert len(table.channels) == sensors and all(c == c.strip() for c in table.channels)
    assert np.isfinite(table.values).all()
    assert any(note in line for line in table.notes), table.notes
    data = build_data(lbnl_args(name))
    for split in SPLITS:
        assert set(getattr(data, split).labels.tolist()) == set(range(classes))


@needs_lbnl
def test_lbnl_fault_names_come_from_the_inventory():
    names = load_table(lbnl_args("SZCAV")).class_names
    assert "Stuck OA Damper / Partially open (50%)" in names and "Leakage of Heating Coil Valve / 5% of max coil valve flow" in names


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def small_csv(tmp_path, rows=None, header="Datetime,a,b,label"):
    lines = rows or [f"1/{1 + i // 40}/2024 {(i % 40) // 2}:{(i % 2) * 30:02d},{i},{2 * i},{'x' if i < 40 else 'y'}" for i in range(80)]
    return write(tmp_path / "log.csv", "\n".join([header, *lines]) + "\n")


def run_on(tmp_path, csv_name, *flags):
    return main(["--root_path", str(tmp_path), "--data_path", csv_name, "--step", "4", "--stride", "2", "--split_block", "1",
                 "--train_epochs", "1", "--progress", "none", "--model", "ResNet1D", "--d_model", "8",
                 "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r"), *flags])  # fmt: skip


@pytest.mark.parametrize("content, flags, words", [
    ("Datetime,a,b,label\n1/1/2024 0:00,1,2,x\n", ("--label_col", "state"), ["--label_col", "'state'", "not found"]),
    ("Datetime,name,label\n1/1/2024 0:00,abc,x\n1/1/2024 0:01,def,y\n", (), ["no numeric sensor columns"]),
    ("Datetime,a,b,label\n1/1/2024 0:00,1,inf,x\n1/1/2024 0:01,2,#N/A,y\n", (), ["column 'b' has no numeric value"]),
    ("Datetime,a,label\n1/1/2024 0:00,1,x\n1/1/2024 0:01,2,\n", (), ["line 3", "empty label"]),
    ("Datetime,a,label\n1/1/2024 0:00,1,x\nyesterday,2,y\n", (), ["'Datetime' line 3", "'yesterday'"]),
    ("Datetime,a,b,label\n1/1/2024 0:00,1,2,x\n", ("--feature_cols", "a,a"), ["--feature_cols", "'a' is listed twice"]),
    ("Datetime,a,b,label\n1/1/2024 0:00,1,2,x\n", ("--feature_cols", "a,c"), ["--feature_cols", "'c' not found"]),
    ("Datetime,a,b,label\n1/1/2024 0:00,,2,x\n1/1/2024 0:01,,3,y\n", (), ["column 'a' has no numeric value"]),
    ("Datetime,a,label\n1/1/2024 0:00,1,x\n1/1/2024 0:01,2,x\n", (), ["one class only"]),
    ("Datetime,a,label\n", (), ["no data rows"]),
    ("", (), ["is empty"]),
    ("a,a,label\n1,2,x\n", (), ["'a' twice"]),
    ("Datetime,a,b,label\n1/1/2024 0:00,1,x,x\n1/1/2024 0:01,2,3,y\n", ("--feature_cols", "a,b"), ["'b' line 2", "'x' is not a number"]),
])  # fmt: skip
def test_bad_files_exit_2_with_one_line_naming_file_column_and_row(tmp_path, capsys, content, flags, words):
    write(tmp_path / "bad.csv", content)
    assert run_on(tmp_path, "bad.csv", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not (tmp_path / "c").exists()


def test_unreadable_files_exit_2(tmp_path, capsys):
    write(tmp_path / "binary.csv", "").write_bytes(b"\xff\xfe\x00\x81garbage\x00" * 50)
    (tmp_path / "folder.csv").mkdir()
    cases = [("binary.csv", "cannot read"), ("folder.csv", "is a folder"), ("missing.csv", "does not exist")]
    if os.geteuid() != 0:  # root reads anything
        write(tmp_path / "locked.csv", "a,label\n1,x\n").chmod(0)
        cases.append(("locked.csv", "not readable"))
    for name, words in cases:
        assert run_on(tmp_path, name) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and words in err[0], err


def test_too_few_windows_and_too_long_windows_are_named(tmp_path, capsys):
    rows = [f"1/1/2024 0:{i:02d},{i},{i},{'x' if i < 50 else 'y'}" for i in range(56)]
    small_csv(tmp_path, rows)
    assert run_on(tmp_path, "log.csv") == 2
    err = capsys.readouterr().err
    assert "class 'y' has too few windows" in err and "--split_block 1" in err
    assert run_on(tmp_path, "log.csv", "--step", "60") == 2
    assert "--step 60 is longer than every segment (the longest has 50 rows" in capsys.readouterr().err


def test_missing_cells_follow_the_missing_rule(tmp_path):
    rows = ["1/1/2024 0:00,1,#VALUE!,x", "1/1/2024 0:01,,20,x", "1/1/2024 0:02,3,inf,x", "1/1/2024 0:03,4,40,x",
            "1/1/2024 0:04,5,50,y", "1/1/2024 0:05,6,#DIV/0!,y"]  # fmt: skip
    small_csv(tmp_path, rows)
    base = ("--root_path", str(tmp_path), "--data_path", "log.csv")
    table = load_table(make_args(*base))
    np.testing.assert_allclose(table.values, [[1, 20], [1, 20], [3, 20], [4, 40], [5, 50], [6, 50]])  # ffill, then bfill
    assert "4 missing or unreadable sensor cells (a: 1 empty; b: 2 error, 1 infinite)" in table.notes[0]
    table = load_table(make_args(*base, "--missing", "interpolate"))
    np.testing.assert_allclose(table.values, [[1, 20], [2, 20], [3, 30], [4, 40], [5, 50], [6, 50]])
    table = load_table(make_args(*base, "--missing", "drop"))
    np.testing.assert_allclose(table.values, [[4, 40], [5, 50]])
    assert [(s.start, s.end) for s in find_segments(table.labels, table.breaks)] == [(0, 1), (1, 2)]


def test_time_column_is_sorted_parsed_in_mixed_formats_and_gaps_cut_segments(tmp_path):
    rows = ["3/1/17 0:02,3,x", "2017-03-01 00:00,1,x", "3/1/2017 0:01,2,x", "3/1/2017 5:00,4,y", "3/1/2017 5:01,5,y"]
    small_csv(tmp_path, rows, header="When,a,label")
    table = load_table(make_args("--root_path", str(tmp_path), "--data_path", "log.csv", "--time_col", "When"))
    assert table.values[:, 0].tolist() == [1, 2, 3, 4, 5] and "rows sorted by 'When'" in table.notes
    assert table.breaks.tolist() == [False, False, False, True, False]  # the 5-hour gap
    epoch = ["1700000000,1,x", "1700000060,2,x", "1700000120,3,y"]
    small_csv(tmp_path, epoch, header="Timestamp,a,label")
    assert load_table(make_args("--root_path", str(tmp_path), "--data_path", "log.csv")).breaks.tolist() == [False] * 3


def test_inventory_turns_binary_truth_into_one_class_per_scenario(tmp_path):
    rows = [f"{d}/2017 {h}:00,{h},{flag}" for d, flag in (("3/1", 0), ("3/2", 1), ("3/3", 1)) for h in range(3)]
    small_csv(tmp_path, rows, header="Datetime,a,truth")
    write(tmp_path / "inv.csv", "fault type,fault intensity,fault occurred time\nStuck OA Damper, Fully open (100%) ,3/2/17\n")
    args = make_args("--root_path", str(tmp_path), "--data_path", "log.csv", "--label_col", "truth", "--fault_inventory", "inv.csv")
    table = load_table(args)
    assert table.class_names == ["normal", "Stuck OA Damper / Fully open (100%)", "fault (not in inventory)"]
    assert table.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_chronological_split_keeps_time_order_and_never_shares_rows():
    segments = find_segments(np.repeat([0, 1], [100, 200]))
    split = chronological_split(segments, length=10, stride=5)
    rows = split_rows(split, 10)
    assert max(rows["train"] & set(range(100))) < min(rows["val"] & set(range(100))) < min(rows["test"] & set(range(100)))


def test_random_split_keeps_class_shares_and_warns(capsys):
    split = random_split(find_segments(np.repeat([0, 1], [300, 300])), length=10, stride=5, seed=0)
    assert [int((split[s].labels == 0).sum()) for s in SPLITS] == [35, 12, 12]
    build_data(make_args("--split", "random", "--data", "GNN"))
    assert "--split random deals overlapping windows" in capsys.readouterr().out
