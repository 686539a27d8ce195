"""Several logs in one run (--data_path a.csv,b.csv | a glob | a folder): each file a unit, stacked into one
table whose windows never cross files, with the blocked split dealt per unit and class."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from data_provider.data_factory import split_windows
from data_provider.sources import load_table
from data_provider.windows import SPLITS, find_segments
from exp.launch import main
from tests.conftest import TINY, make_args


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Three simulated air handlers (other buildings: other --sim_seed), one CSV each."""
    folder = tmp_path_factory.mktemp("fleet")
    for seed, name in enumerate(("ahu1", "ahu2", "ahu3")):
        assert main(["--sim_days", "1", "--sim_seed", str(seed + 1), "--export_data", str(folder / f"{name}.csv")]) == 0
    return folder


def table_and_split(folder, data_path, *flags):
    args = make_args("--data", "Classification", "--root_path", str(folder), "--data_path", data_path, *flags)
    table = load_table(args)
    return table, split_windows(args, find_segments(table.labels, table.breaks), table.units), args


def test_units_stack_without_a_window_across_files_and_each_reaches_every_split(logs):
    table, split, args = table_and_split(logs, "ahu1.csv,ahu2.csv,ahu3.csv")
    assert table.unit_names == ["ahu1", "ahu2", "ahu3"]
    assert len(table.values) == sum(len(pd.read_csv(logs / f"ahu{k}.csv")) for k in (1, 2, 3))
    for name in SPLITS:
        starts = split[name].starts
        assert np.array_equal(table.units[starts], table.units[starts + args.step - 1])  # inside one file
        assert set(table.units[starts]) == {0, 1, 2}  # every unit in every split
    # Each unit is dealt as it would be alone: its windows are those of its file alone, behind the earlier units' rows.
    for unit in (0, 1, 2):
        alone_table, alone, _ = table_and_split(logs, f"ahu{unit + 1}.csv")
        assert alone_table.class_names == table.class_names
        offset = int(np.flatnonzero(table.units == unit)[0])
        for name in SPLITS:
            mine = table.units[split[name].starts] == unit
            assert np.array_equal(split[name].starts[mine] - offset, alone[name].starts)
            assert np.array_equal(split[name].labels[mine], alone[name].labels)
    # The second unit's rows are its file's values, behind the first unit's.
    second = pd.read_csv(logs / "ahu2.csv")
    rows = np.flatnonzero(table.units == 1)
    assert np.allclose(table.values[rows], second[table.channels].to_numpy())


@pytest.mark.parametrize("data_path", ["ahu*.csv", "."])
def test_a_glob_or_a_folder_names_the_same_units_as_a_list(logs, data_path):
    listed, _, _ = table_and_split(logs, "ahu1.csv,ahu2.csv,ahu3.csv")
    table, _, _ = table_and_split(logs, data_path)
    assert table.unit_names == listed.unit_names and np.array_equal(table.values, listed.values)


def test_several_logs_train_in_one_run_and_the_summary_lists_each_unit(logs, tmp_path, capsys):
    outputs = ["--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res")]
    flags = [*TINY, "--model", "ResNet1D", "--train_epochs", "1", "--root_path", str(logs), "--data_path", "ahu1.csv,ahu2.csv"]
    assert main([*flags, *outputs]) == 0
    out = capsys.readouterr().out
    assert "Data: 2 units (ahu1.csv, ahu2.csv)" in out and "Units:\n  ahu1: " in out and "\n  ahu2: " in out
    (run,) = [p.name for p in (tmp_path / "res").iterdir() if p.is_dir()]
    assert run.startswith("ahu1+1_ResNet1D_")  # the default name: the first log and how many more
    # Predictions and metrics carry the unit; each unit's figures match its own rows of predictions.csv.
    predictions = pd.read_csv(tmp_path / "res" / run / "predictions.csv")
    metrics = json.loads((tmp_path / "res" / run / "metrics.json").read_text())
    assert predictions.columns[0] == "unit" and list(metrics["units"]) == ["ahu1", "ahu2"]
    assert "Per unit (test windows)\n  ahu1: accuracy " in out
    for unit, figures in metrics["units"].items():
        rows = predictions[predictions["unit"] == unit]
        assert figures["test_windows"] == len(rows) > 0
        assert figures["test_accuracy"] == pytest.approx((rows["true_class"] == rows["predicted_class"]).mean())
        assert figures["test_macro_f1"] == pytest.approx(f1_score(rows["true_class"], rows["predicted_class"], average="macro"))
        normal = rows["true_class"] == "normal"
        alarms = (rows["predicted_class"] != "normal") & normal
        assert figures["false_alarm_rate"] == pytest.approx(alarms.sum() / normal.sum())
    assert sum(f["test_windows"] for f in metrics["units"].values()) == metrics["test_samples"]


def refusal(capsys, tmp_path, folder, data_path, *flags) -> str:
    outputs = ["--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res")]
    assert main([*TINY, "--root_path", str(folder), "--data_path", data_path, *flags, *outputs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not (tmp_path / "ckpt").exists() and not (tmp_path / "res").exists(), err
    return err[0]


def test_bad_fleets_are_refused_in_one_line_with_nothing_written(logs, tmp_path, capsys):
    odd = tmp_path / "odd"
    odd.mkdir()
    frame = pd.read_csv(logs / "ahu1.csv")
    frame.drop(columns=[frame.columns[1]]).to_csv(odd / "fewer.csv", index=False)
    frame.iloc[::2].to_csv(odd / "slower.csv", index=False)
    (odd / "empty").mkdir()
    (odd / "ahu1.csv").write_text((logs / "ahu1.csv").read_text())
    cases = [
        ("nothing*.csv", (), "--data_path: nothing*.csv matches no log file under"),
        ("empty", (), "is a folder with no .csv or .parquet log in it"),
        ("ahu1.csv,fewer.csv", (), f"fewer.csv has other sensor columns than {odd / 'ahu1.csv'} (lacks {frame.columns[1]})"),
        ("ahu1.csv,slower.csv", (), "slower.csv is sampled every 120.0 s and"),
        ("ahu1.csv,ahu1.csv", (), "is named twice"),
        ("ahu1.csv,", (), "an empty name"),
        ("ahu1.csv,slower.csv", ("--fault_inventory", "inv.csv", "--label_col", "label"), "one inventory for several logs"),
        ("ahu1.csv", ("--fault_inventory", "auto"), "has no inventory ahu1-faults.csv beside it"),
    ]
    for data_path, flags, message in cases:
        assert message in refusal(capsys, tmp_path, odd, data_path, *flags), data_path


def test_fault_inventory_auto_reads_each_units_inventory_beside_it():
    from tests.test_csv import GROUND_TRUTH, LBNL

    if not (LBNL / "SZCAV-faults.csv").is_file():
        pytest.skip(f"shared LBNL data not found at {LBNL}")
    common = ("--data", "Classification", "--root_path", str(LBNL), "--label_col", GROUND_TRUTH, "--step", "96")
    named = load_table(make_args(*common, "--data_path", "SZCAV.csv", "--fault_inventory", "SZCAV-faults.csv"))
    auto = load_table(make_args(*common, "--data_path", "SZCAV.csv", "--fault_inventory", "auto"))
    assert auto.class_names == named.class_names and np.array_equal(auto.labels, named.labels)
    both = load_table(make_args(*common, "--data_path", "SZCAV.csv,SZVAV.csv", "--fault_inventory", "auto"))
    szvav = load_table(make_args(*common, "--data_path", "SZVAV.csv", "--fault_inventory", "SZVAV-faults.csv"))
    assert set(both.class_names) == set(named.class_names) | set(szvav.class_names)  # the union of the units' classes
    second = both.units == 1
    assert [both.class_names[i] for i in both.labels[second]] == [szvav.class_names[i] for i in szvav.labels]


def test_a_file_whose_name_has_a_comma_or_brackets_is_one_log(logs, tmp_path):
    odd = tmp_path / "AHU-1 [2024],export.csv"
    odd.write_text((logs / "ahu1.csv").read_text())
    table, _, args = table_and_split(tmp_path, odd.name)
    assert table.unit_names == [] and args.model_id == "AHU-1__2024__export"
    assert np.array_equal(table.values, table_and_split(logs, "ahu1.csv")[0].values)


def test_logs_of_one_name_in_two_folders_are_two_units_and_one_log_twice_is_refused(logs, tmp_path, capsys):
    for building in ("b1", "b2"):
        (tmp_path / building).mkdir()
        (tmp_path / building / "AHU.csv").write_text((logs / f"ahu{building[1]}.csv").read_text())
    table, _, _ = table_and_split(tmp_path, "b*/AHU.csv")
    assert table.unit_names == ["b1/AHU", "b2/AHU"]
    pd.read_csv(tmp_path / "b1" / "AHU.csv").to_parquet(tmp_path / "b1" / "AHU.parquet", index=False)
    assert "two logs are both unit AHU; keep one" in refusal(capsys, tmp_path, tmp_path / "b1", ".")
