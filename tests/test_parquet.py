"""Parquet logs (through pyarrow, optional): read to the same bits as the CSV of the same table."""

import sys

import numpy as np
import pandas as pd
import pytest

from data_provider.csv_source import read_parquet_strings
from data_provider.sources import load_table
from exp.launch import main
from tests.conftest import make_args
from utils.errors import UserError


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """A simulated log with a few empty cells, as CSV and as Parquet (times as datetimes there)."""
    folder = tmp_path_factory.mktemp("parquet")
    assert main(["--sim_days", "1", "--export_data", str(folder / "sim.csv")]) == 0
    frame = pd.read_csv(folder / "sim.csv")
    sensor = frame.columns[3]
    frame.loc[[5, 6, 700], sensor] = np.nan
    frame.to_csv(folder / "log.csv", index=False)
    return folder, frame


def table(folder, name):
    return load_table(make_args("--data", "Classification", "--root_path", str(folder), "--data_path", name))


def test_a_parquet_log_reads_to_the_same_bits_as_its_csv(log):
    pytest.importorskip("pyarrow", reason="Parquet is read through pyarrow (in requirements-dev.txt)")
    folder, frame = log
    typed = frame.assign(**{frame.columns[0]: pd.to_datetime(frame[frame.columns[0]])})
    typed.to_parquet(folder / "log.parquet", index=False)
    csv, parquet = table(folder, "log.csv"), table(folder, "log.parquet")
    assert parquet.channels == csv.channels and parquet.class_names == csv.class_names
    assert np.array_equal(parquet.values, csv.values) and np.array_equal(parquet.labels, csv.labels)
    assert np.array_equal(parquet.times, csv.times) and np.array_equal(parquet.breaks, csv.breaks)
    assert not np.isnan(parquet.values).any()  # the empty cells were filled (--missing ffill) as in the CSV
    assert parquet.source.endswith("(Parquet)")
    (folder / "other.parquet").write_bytes((folder / "log.parquet").read_bytes())
    both = table(folder, "log.csv,other.parquet")  # a CSV unit and a Parquet unit in one run
    assert both.unit_names == ["log", "other"] and np.array_equal(both.values[both.units == 1], csv.values)
    typed.set_index(frame.columns[0]).to_parquet(folder / "indexed.parquet")  # the time saved as the index
    indexed = table(folder, "indexed.parquet")
    assert np.array_equal(indexed.times, csv.times) and np.array_equal(indexed.values, csv.values)


def test_without_pyarrow_or_with_a_broken_file_the_refusal_is_one_line(log, tmp_path, monkeypatch):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(UserError, match=r"--data_path: cannot read .*broken.parquet as Parquet \("):
        read_parquet_strings(broken, "--data_path")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    with pytest.raises(UserError, match=r"needs pyarrow \(pip install pyarrow\), or give the log as CSV"):
        read_parquet_strings(broken, "--data_path")
