"""The fast paths change nothing but speed: device-resident data gives the DataLoader's batches
and weights, --compile trains to the eager weights, and the loop does not sync per micro-batch."""

import copy

import numpy as np
import pytest
import torch

from data_provider.data_factory import ResidentLoader, make_eval_loader, make_loader
from exp.exp import Exp
from tests.conftest import flat_params, make_args, subset
from utils.errors import UserError
from utils.seed import seed_everything

FORMAT_MODELS = [("Classification", "ResNet1D"), ("DualGAF", "DualGAFNet"), ("GNN", "GNN")]
EXACT = ("--dtype", "float64", "--dropout", "0", "--device", "cpu")


def build(data, *flags, n_train=45, tmp=None):
    args = make_args(*flags, tmp=tmp)
    data = copy.copy(data)
    data.train = subset(data.train, n_train)
    seed_everything(args.seed)
    return Exp(args, data)


def same_batches(a, b) -> None:
    a, b = list(a), list(b)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert type(x) is type(y)
        for left, right in zip(x.inputs(), y.inputs()):
            assert torch.equal(left, right)
        assert torch.equal(x.labels, y.labels)


@pytest.mark.parametrize("data_format, model", FORMAT_MODELS)
def test_resident_batches_are_the_dataloader_batches_for_every_process_and_split(tiny_data, data_format, model):
    data = tiny_data(data_format)
    for rank in (0, 1):  # a process's share of each global micro-batch of 6, shuffled by seed and epoch
        loaders = [make_loader(data.train, 6, True, 7, rank=rank, world_size=2, resident=resident) for resident in (False, True)]
        assert isinstance(loaders[1], ResidentLoader) and not isinstance(loaders[0], ResidentLoader)
        for epoch, skip in ((0, 0), (3, 2)):  # another epoch's order, and a resumed epoch
            for loader in loaders:
                loader.sampler.set_epoch(epoch, skip)
            same_batches(*loaders)
        same_batches(*(make_eval_loader(data.val, 16, rank, 2, resident=resident) for resident in (False, True)))


@pytest.mark.parametrize("data_format, model", FORMAT_MODELS)
def test_resident_data_trains_to_the_same_weights_as_the_dataloader(tiny_data, data_format, model):
    flags = ("--data", data_format, "--model", model, *EXACT, "--batch_size", "4", "--gradient_accumulation_steps", "3")
    runs = {}
    for mode in ("on", "off"):
        exp = build(
            tiny_data(data_format, "--dtype", "float64"), *flags, "--resident_data", mode
        )  # 45 windows: a short last batch and window
        assert isinstance(exp.train_loader, ResidentLoader) == (mode == "on")
        for epoch in range(2):
            exp.train_epoch(epoch)
        runs[mode] = (flat_params(exp.model), exp.vali(exp.val_loader)["loss"], exp.state.updates)
    np.testing.assert_array_equal(runs["on"][0], runs["off"][0])
    assert runs["on"][1:] == runs["off"][1:]


def test_the_splits_share_one_device_copy_of_the_table(tiny_data):
    data = tiny_data("GNN")
    train, val, test = data.splits_on(torch.device("meta"))  # a device without memory: copies cost nothing here
    assert train.values.device.type == "meta" and train.values is val.values is test.values
    assert train.label_ids.device.type == "meta" and len(train.label_ids) == len(data.train)
    assert train.fmt.adjacency.device.type == "meta" and data.train.fmt.adjacency.device.type == "cpu"


def test_auto_resident_data_is_on_without_workers_and_off_with_them(tiny_data):
    data = tiny_data("Classification")
    assert isinstance(build(data, "--model", "ResNet1D").train_loader, ResidentLoader)
    assert not isinstance(build(data, "--model", "ResNet1D", "--num_workers", "1").train_loader, ResidentLoader)


def count_host_syncs(monkeypatch) -> dict:
    """Count the ways Python reads a tensor's value (each one waits for the device)."""
    calls = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            calls["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_the_loop_reads_device_values_once_per_window_not_per_micro_batch(tiny_data, monkeypatch):
    exp = build(tiny_data("Classification"), "--model", "ResNet1D", "--optimizer", "sgd", "--batch_size", "2",
                "--gradient_accumulation_steps", "8", n_train=64)  # fmt: skip
    calls = count_host_syncs(monkeypatch)
    exp.train_epoch(0)
    micro, updates = exp.state.meter.micro_batches, exp.state.updates
    assert (micro, updates) == (32, 4)
    assert calls["n"] <= 2 * updates + 2, f"{calls['n']} reads of device values for {micro} micro-batches"


def test_compile_trains_to_the_eager_weights_and_saves_plain_checkpoints(tiny_data, tmp_path):
    pytest.importorskip("torch._inductor")
    flags = ("--data", "Classification", "--model", "ResNet1D", *EXACT, "--batch_size", "4", "--gradient_accumulation_steps", "3",
             "--train_epochs", "1", "--patience", "0")  # fmt: skip
    eager = build(tiny_data("Classification", "--dtype", "float64"), *flags, n_train=22, tmp=tmp_path / "eager")
    fast = build(tiny_data("Classification", "--dtype", "float64"), *flags, "--compile", n_train=22, tmp=tmp_path / "fast")
    assert fast.args.compile == "default" and "torch.compile mode default" in fast.describe()
    assert fast.model is not fast.bare_model and eager.model is eager.bare_model
    for exp in (eager, fast):
        exp.train("run")  # 6 micro-batches (the last one short): 2 updates
    assert eager.state.updates == fast.state.updates == 2
    a, b = flat_params(fast.bare_model), flat_params(eager.bare_model)
    assert not np.array_equal(
        a, flat_params(build(tiny_data("Classification", "--dtype", "float64"), *flags, n_train=22).model)
    )  # it trained
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-10  # float64: the same up to the order of operations
    saved = torch.load(tmp_path / "fast" / "ckpt" / "run" / "last.pt", weights_only=True)["model"]
    assert saved.keys() == eager.bare_model.state_dict().keys()  # no torch.compile prefix: loads into a plain model


def test_compile_with_cuda_graphs_is_refused_when_a_window_adds_up_micro_batches(tiny_data):
    for flags in (("--gradient_accumulation_steps", "2"), ("--cross_epoch_accumulation",)):
        with pytest.raises(UserError, match="--compile reduce-overhead \\(CUDA graphs\\) cannot add up gradients"):
            build(tiny_data("Classification"), "--model", "ResNet1D", "--compile", "reduce-overhead", *flags)


def test_compile_on_a_cpu_without_a_compiler_is_refused_with_one_line(tiny_data, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(UserError, match="--compile: compiling for the CPU needs a C\\+\\+ compiler"):
        build(tiny_data("Classification"), "--model", "ResNet1D", "--device", "cpu", "--compile")
