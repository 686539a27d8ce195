"""UEA .ts files written by the test itself: equal and unequal lengths, missing values, bad files."""

import numpy as np
import pytest
import torch

from data_provider.data_factory import build_data
from data_provider.uea import read_ts
from exp.launch import main
from tests.conftest import make_args

HEADER = (
    "# written by the test\n@problemName Toy\n@timeStamps false\n@missing true\n@univariate false\n@dimensions 2\n"
    "@classLabel true up down\n@data\n"
)


def sample(rng, label, length):
    trend = np.linspace(0, 1, length) * (1 if label == "up" else -1)
    dims = [trend + 0.05 * rng.normal(size=length), -trend + 0.05 * rng.normal(size=length)]
    return ":".join(",".join(f"{v:.4f}" for v in d) for d in dims) + f":{label}"


def write_toy(folder, name="Toy", lengths=(24,), per_class=(10, 6), header=HEADER):
    rng = np.random.default_rng(0)
    for split, count in zip(("TRAIN", "TEST"), per_class):
        lines = [sample(rng, label, lengths[i % len(lengths)]) for i in range(count) for label in ("up", "down")]
        (folder / f"{name}_{split}.ts").write_text(header + "\n".join(lines) + "\n")


def uea_args(folder, *flags):
    return make_args("--root_path", str(folder), "--data_path", "Toy", *flags)


def test_equal_length_files_become_one_sample_per_series(tmp_path):
    write_toy(tmp_path)
    data = build_data(uea_args(tmp_path, "--data", "Classification"))
    assert data.class_names == ["down", "up"] and data.seq_len == 24 and len(data.channels) == 2
    assert (len(data.train), len(data.val), len(data.test)) == (16, 4, 12)  # 20 % of TRAIN per class validates
    batch = data.test[np.arange(3)]
    assert batch.mask is None and batch.x.shape == (3, 24, 2)


def test_unequal_lengths_are_padded_and_masked_for_plain_models(tmp_path):
    write_toy(tmp_path, lengths=(16, 24, 20))
    data = build_data(uea_args(tmp_path, "--data", "Classification"))
    assert data.seq_len == 24 and "padded and masked" in data.source
    batch = data.train[np.arange(len(data.train))]
    lengths = batch.mask.sum(1)
    assert set(lengths.tolist()) == {16, 20, 24}
    assert (batch.x[~batch.mask] == 0).all()  # padding after scaling
    assert len(batch.inputs()) == 2


@pytest.mark.parametrize("fmt", ["DualGAF", "GNN"])
def test_unequal_lengths_are_resampled_for_images_and_graphs(tmp_path, fmt):
    write_toy(tmp_path, lengths=(16, 24))
    data = build_data(uea_args(tmp_path, "--data", fmt))
    assert "resampled" in data.source
    batch = data.train[np.arange(4)]
    assert batch.mask is None and batch.x.shape[1] == 24 and torch.isfinite(batch.x).all()


def test_transformer_ignores_padded_tokens(tmp_path):
    from models import InputDims, build_model

    args = make_args("--data", "Classification", "--model", "Transformer", "--patch_len", "4", "--dropout", "0")
    torch.manual_seed(0)
    model = build_model("Transformer", args, InputDims(2, 24, 3)).eval()
    x = torch.randn(1, 24, 2)
    mask = torch.zeros(1, 24, dtype=torch.bool)
    mask[:, :16] = True
    garbage = x.clone()
    garbage[:, 16:] = 1e3  # what lies in the padding must not matter
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), model(garbage, mask))
        assert not torch.allclose(model(x), model(garbage))


def test_window_statistics_of_a_padded_series_are_those_of_its_real_steps():
    from models.layers import window_statistics

    torch.manual_seed(0)
    x = torch.randn(3, 24, 2, dtype=torch.float64)
    lengths = [24, 16, 5]
    mask = torch.arange(24) < torch.tensor(lengths).unsqueeze(1)
    padded = x.masked_fill(~mask.unsqueeze(-1), 1e3)  # what lies in the padding must not matter
    stats = window_statistics(padded, mask)
    for i, n in enumerate(lengths):
        real = x[i, :n].numpy()
        expected = np.stack([real.mean(0), real.std(0), real.min(0), real.max(0), real[-1] - real[0]], axis=-1)
        np.testing.assert_allclose(stats[i].numpy(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(window_statistics(x, torch.ones(3, 24, dtype=torch.bool)), window_statistics(x))


def test_missing_values_are_interpolated(tmp_path):
    path = tmp_path / "One_TRAIN.ts"
    path.write_text(HEADER + "1,?,3,?:5,6,7,8:up\n")
    series = read_ts(path).series[0]
    np.testing.assert_allclose(series, [[1, 5], [2, 6], [3, 7], [3, 8]])


@pytest.mark.parametrize(
    "fmt, model", [("Classification", "ResNet1D"), ("Classification", "Transformer"), ("DualGAF", "DualGAFNet"), ("GNN", "GNN")]
)
def test_every_format_trains_on_unequal_uea_data(tmp_path, fmt, model):
    write_toy(tmp_path, lengths=(16, 24, 20))
    flags = ["--root_path", str(tmp_path), "--data_path", "Toy", "--data", fmt, "--model", model, "--train_epochs", "2",
             "--batch_size", "4", "--d_model", "16", "--n_heads", "2", "--gaf_size", "8", "--progress", "none",
             "--checkpoints", str(tmp_path / "c"), "--results", str(tmp_path / "r")]  # fmt: skip
    assert main(flags) == 0
    assert (tmp_path / "r" / "summary.csv").is_file()


@pytest.mark.parametrize("content, words", [
    ("@dimensions 2\n@data\n1,2:3,4:up\n1,2:up\n", ["Bad_TRAIN.ts line 4", "1 dimensions, expected 2"]),
    ("@data\n1,x,3:up\n", ["Bad_TRAIN.ts line 2", "not a number"]),
    ("@timeStamps true\n@data\n", ["time-stamped"]),
    ("@data\n", ["no samples"]),
])  # fmt: skip
def test_bad_ts_files_exit_2_naming_file_and_line(tmp_path, capsys, content, words):
    (tmp_path / "Bad_TRAIN.ts").write_text(content)
    (tmp_path / "Bad_TEST.ts").write_text("@data\n1,2:3,4:up\n")
    assert main(["--root_path", str(tmp_path), "--data_path", "Bad", "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err


def test_train_and_test_files_with_other_dimensions_are_refused(tmp_path, capsys):
    write_toy(tmp_path)
    (tmp_path / "Toy_TEST.ts").write_text("@data\n1,2,3:up\n")
    assert main(["--root_path", str(tmp_path), "--data_path", "Toy", "--progress", "none"]) == 2
    assert "1 dimensions, but" in capsys.readouterr().err
