"""--config FILE and --print_config: a run's configuration written, read back and reproduced."""

import json

import pytest
import torch

from config.files import parse
from config.flags import flag_table
from config.registry import TSL
from exp.launch import main
from tests.conftest import TINY
from tests.test_cli import run_cli

HIDDEN = ("config", "print_config")


def resolved(*argv: str) -> dict:
    """The validated flags, less the Time-Series-Library names (a configuration holds what they translate to)."""
    _, args, _, _ = parse(list(argv))
    return {key: value for key, value in vars(args).items() if key not in HIDDEN and flag_table()[key].role != TSL}


def printed(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main([*argv, "--print_config"]) == 0
    return capsys.readouterr().out


LINES = [
    [],
    ["--model", "ResNet1D", "--dropout", "0", "--window_stats", "off", "--itr", "2", "--des", "sweep", "--use_amp"],
    ["--data_path", "logs.csv", "--max_gap", "90s", "--csv_sep", "tab", "--csv_decimal", "comma", "--feature_cols", "a,b",
     "--duplicates", "mean", "--fast_dev_run", "3", "--compile"],
    ["--seq_len", "64", "--use_gpu", "false", "--lradj", "cosine", "--loss", "CE", "--top_k", "3"],  # TSL names
    ["--data_path", "logs.csv", "--max_gap", "336h", "--model", "Transformer", "--d_ff", "128", "--sensor_roles", "r.json"],
]  # fmt: skip


@pytest.mark.parametrize("argv", LINES, ids=["defaults", "recipe", "csv", "tsl", "weeks"])
def test_print_config_writes_a_toml_file_that_config_reads_back_to_the_same_run(tmp_path, capsys, argv):
    text = printed(capsys, *argv)
    path = tmp_path / "run.toml"
    path.write_text(text)
    assert resolved("--config", str(path)) == resolved(*argv)
    assert list(tmp_path.iterdir()) == [path]  # printing writes nothing
    if "--seq_len" in argv:
        assert 'step = 64\n' in text and 'device = "cpu"\n' in text and 'loss_preset = "standard"\n' in text


def test_what_the_run_worked_out_follows_the_flags_typed_over_the_file(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text(printed(capsys))  # the defaults: DualGAFNet on DualGAF, stride 48, model_id ahu, ...
    assert "[derived]" in path.read_text() and 'data = "DualGAF"' in path.read_text()
    assert resolved("--config", str(path), "--model", "GNN") == resolved("--model", "GNN")
    assert resolved("--config", str(path), "--step", "192")["stride"] == 96
    assert resolved("--config", str(path), "--data_path", "new.csv") == resolved("--data_path", "new.csv")
    assert resolved("--config", str(path), "--seq_len", "32")["step"] == 32  # a TSL name typed over the file's flag
    # A default that changed since the file was written is pointed out when the file alone is read.
    path.write_text(path.read_text().replace('stride = 48', 'stride = 24'))
    _, _, notes, _ = parse(["--config", str(path)])
    assert notes == [f"this version works out --stride 48 where {path} recorded 24 (a default changed?); add stride = 24 "
                     "to the file to keep it"]  # fmt: skip


def test_yaml_and_json_files_set_flags_and_the_command_line_overrides_them(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("model: ResNet1D\nbatch_size: 8\nwindow_stats: off\nmax_gap: 5min\nno_temporal: true\n"
                         "learning_rate: 0.001\n")  # fmt: skip
    typed = ["--model", "ResNet1D", "--batch_size", "8", "--window_stats", "off", "--max_gap", "5min", "--no_temporal",
             "--learning_rate", "0.001"]  # fmt: skip
    # (--max_gap needs --data_path; --no_temporal is a DualGAFNet switch that ResNet1D ignores)
    assert resolved("--config", str(yaml_file), "--data_path", "x.csv") == resolved(*typed, "--data_path", "x.csv")
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"batch_size": 8, "seed": 7, "des": "from_json"}))
    values = resolved("--config", str(json_file), "--batch_size", "4")
    assert (values["batch_size"], values["seed"], values["des"]) == (4, 7, "from_json")  # typed wins, the rest stays
    assert resolved("--batch_size", "4", f"--config={json_file}")["batch_size"] == 4  # wherever --config stands
    # YAML reads a bare on/off as a boolean: it means the flag's on or off, or the flag alone.
    yaml_file.write_text("derived_signals: off\nresident_data: on\ncompile: off\nfast_dev_run: true\n")
    typed = ["--derived_signals", "off", "--resident_data", "on", "--compile", "off", "--fast_dev_run"]
    assert resolved("--config", str(yaml_file)) == resolved(*typed)


BAD_FILES = [
    ("bad.toml", "batchsize = 8\n", "unknown key 'batchsize'; did you mean batch_size?"),
    ("bad.toml", 'batch_size = "eight"\n', "argument --batch_size: expected an integer, got 'eight' (from {path}, key 'batch_size')"),
    ("bad.toml", "dropout = 1.5\n", "argument --dropout: must be <= 0.95, got '1.5' (from {path}, key 'dropout')"),
    ("bad.toml", 'loss_preset = "huber"\n', "argument --loss_preset: invalid choice: 'huber'"),
    ("bad.toml", 'overwrite = "yes"\n', "argument --overwrite: a switch: expected true or false, got 'yes'"),
    ("bad.toml", "batch_size = [4, 8]\n", "argument --batch_size: expected one value, got a list"),
    ("bad.toml", "max_gap = 300\n", "argument --max_gap: give '300' a unit"),
    ("bad.toml", 'min_lr = 0.01\n', "argument --min_lr: 0.01 is above --learning_rate 0.002 (from {path}, key 'min_lr')"),
    ("bad.toml", 'config = "other.toml"\n', "a configuration file cannot name another one"),
    ("bad.toml", "batch_size = \n", "is not valid TOML"),
    ("bad.yaml", "batch_size: [4\n", "is not valid YAML"),
    ("bad.json", "[1, 2]", "holds no table of flag values"),
    ("bad.ini", "batch_size = 8\n", "expected a .toml, .yaml, .yml or .json file"),
]  # fmt: skip


@pytest.mark.parametrize("name, text, message", BAD_FILES)
def test_a_bad_configuration_file_is_refused_in_one_line_naming_the_file_and_key(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SystemExit) as stopped:
        main(["--config", str(path), "--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err, err
    assert message.format(path=path) in err, err
    assert sorted(tmp_path.iterdir()) == [path]  # nothing written


def test_an_unreadable_file_is_refused_from_the_shell_with_exit_code_2(tmp_path):
    (tmp_path / "folder.toml").mkdir()
    (tmp_path / "latin1.toml").write_bytes("des = 'Kälte'\n".encode("latin-1"))
    for path in (tmp_path / "missing.toml", tmp_path / "folder.toml", tmp_path / "latin1.toml"):
        result = run_cli("--config", str(path), "--checkpoints", str(tmp_path / "ckpt"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "argument --config: cannot read" in lines[0], result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "ckpt").exists()


FLOAT64 = [*TINY, "--dtype", "float64", "--model", "ResNet1D", "--train_epochs", "2", "--batch_size", "16"]


def metrics(results, run: str) -> dict:
    return json.loads((results / run / "metrics.json").read_text())


def test_a_runs_args_json_reproduces_its_test_figures_and_retrains_to_the_same_weights(tmp_path, capsys):
    outputs = ["--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res")]
    assert main([*FLOAT64, *outputs]) == 0
    (run,) = [folder.name for folder in (tmp_path / "res").iterdir() if folder.is_dir()]
    record, first = tmp_path / "res" / run / "args.json", metrics(tmp_path / "res", run)
    config = json.loads(record.read_text())["config"]
    assert config["train_epochs"] == 2 and "resume" not in config and "dtype" in config

    assert main(["--config", str(record), "--is_training", "0"]) == 0  # the same run folder, its best.pt tested
    tested = metrics(tmp_path / "res", run)
    for key in ("test_accuracy", "test_macro_f1", "test_loss", "false_alarm_rate", "detection_rate"):
        assert tested[key] == first[key], key

    assert main(["--config", str(record), "--des", "again"]) == 0  # retrained from the file alone
    again = run.replace("_Exp_", "_again_")
    weights = [torch.load(tmp_path / "ckpt" / name / "best.pt", weights_only=True)["model"] for name in (run, again)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert metrics(tmp_path / "res", again)["test_macro_f1"] == first["test_macro_f1"]


def test_an_args_json_of_a_run_before_config_files_still_finds_its_run(tmp_path, capsys):
    """Older records hold the args as the run resolved them (--train_epochs auto -> a number); read back,
    the run name must still be the run's own, or --is_training 0 would find no best.pt."""
    outputs = ["--checkpoints", str(tmp_path / "ckpt"), "--results", str(tmp_path / "res")]
    assert main([*TINY, "--model", "ResNet1D", "--fast_dev_run", "2", *outputs]) == 0  # --train_epochs 1 (typed by it)
    flags = [*TINY, "--model", "ResNet1D", "--limit_train_batches", "2", "--max_gap", "90s", "--data_path", "x.csv"]
    _, args, _, _ = parse(flags)
    old = {"run": "r", "command": ["run.py", *flags], "args": {**vars(args), "train_epochs": 12}}
    del old["args"]["config"], old["args"]["print_config"]
    path = tmp_path / "args.json"
    path.write_text(json.dumps(old))
    assert resolved("--config", str(path)) == resolved(*flags)  # auto again, and 90.0 seconds read as 90s
