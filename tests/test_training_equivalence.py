"""The train loop with accumulation against large-batch training and independent references."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exp.exp import Exp
from tests.conftest import flat_params, make_args, subset
from utils.seed import seed_everything


def build_exp(data, *flags, n_train=None):
    args = make_args("--dropout", "0", "--class_weights", "none", *flags)  # references are plain means
    if n_train is not None:
        data = copy.copy(data)
        data.train = subset(data.train, n_train)
    seed_everything(args.seed)
    return Exp(args, data)


def record_updates(exp):
    """Wrap optimizer.step: keep (weights before, gradients) of every update."""
    seen, step = [], exp.optimizer.step

    def recording_step(*a, **k):
        params = list(exp.model.parameters())
        seen.append(([p.detach().clone() for p in params], [p.grad.detach().clone() for p in params]))
        return step(*a, **k)

    exp.optimizer.step = recording_step
    return seen


def reference_gradient(exp, weights, samples):
    """Mean cross-entropy gradient over ``samples`` in one large batch, on a fresh copy."""
    model = copy.deepcopy(exp.model)
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    model.zero_grad()
    batch = exp.data.train[samples].to(exp.device)
    F.cross_entropy(model(*batch.inputs()), batch.labels).backward()
    return [p.grad for p in model.parameters()]


def assert_grads_close(got, want, rtol=1e-5):
    got = torch.cat([g.flatten() for g in got]).double()
    want = torch.cat([g.flatten() for g in want]).double()
    assert torch.linalg.norm(got - want) <= rtol * torch.linalg.norm(want)


@pytest.mark.parametrize("n_train, expected_windows", [(32, [8, 8, 8, 8]), (26, [8, 8, 8, 2])])
def test_each_update_is_the_mean_gradient_of_its_window(tiny_data, n_train, expected_windows):
    """8 micro-batches with GA 2 -> 4 updates; 7 micro-batches -> 4 updates, the last built
    from one micro-batch of 2 samples and weighted as those 2 samples (not 1/GA of them)."""
    exp = build_exp(
        tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "2",
        "--loss_preset", "standard", "--max_grad_norm", "0", n_train=n_train,
    )  # fmt: skip
    updates = record_updates(exp)
    exp.train_epoch(0)
    assert exp.state.updates == len(updates) == 4
    order = exp.train_loader.sampler.order(0)
    start = 0
    for (weights, grads), size in zip(updates, expected_windows):
        want = reference_gradient(exp, weights, order[start : start + size])
        assert_grads_close(grads, want)
        start += size
    # The broken rule (divide every micro-batch mean by GA) would halve the last update.
    weights, grads = updates[-1]
    if expected_windows[-1] == 2:
        half = [g / 2 for g in reference_gradient(exp, weights, order[24:26])]
        with pytest.raises(AssertionError):
            assert_grads_close(grads, half)


def test_parameters_do_not_move_inside_a_window(tiny_data):
    exp = build_exp(
        tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "4", "--gradient_accumulation_steps", "3", n_train=36
    )
    snapshots = []
    original = exp.trainer._micro_step

    def spy(batch, step):
        snapshots.append((step.position, flat_params(exp.model)))
        original(batch, step)

    exp.trainer._micro_step = spy
    exp.train_epoch(0)
    for (pos_a, a), (pos_b, b) in zip(snapshots, snapshots[1:]):
        if pos_b > pos_a:  # same window: no update in between
            np.testing.assert_array_equal(a, b)
        else:
            assert not np.array_equal(a, b)


FORMATS = [("Classification", "ResNet1D"), ("Classification", "Transformer"), ("DualGAF", "DualGAFNet"), ("GNN", "GNN")]


@pytest.mark.parametrize("data_format, model", FORMATS)
def test_small_micro_batches_end_the_epoch_like_one_large_batch(tiny_data, data_format, model):
    """(8, GA 1), (4, GA 2) and (2, GA 4) on 45 windows (a short last batch of 5, a short
    last micro-batch of 1) end one epoch with the same weights."""
    data = tiny_data(data_format)
    finals = []
    for batch_size, steps in [(8, 1), (4, 2), (2, 4)]:
        exp = build_exp(data, "--model", model, "--batch_size", str(batch_size), "--gradient_accumulation_steps", str(steps), n_train=45)
        exp.train_epoch(0)
        assert exp.state.updates == 6  # ceil(45 / 8)
        finals.append(flat_params(exp.model))
    for other in finals[1:]:
        assert np.linalg.norm(other - finals[0]) / np.linalg.norm(finals[0]) < 1e-5


def test_auto_accumulation_matches_its_rule_and_prints_the_plan(tiny_data, capsys):
    exp = build_exp(
        tiny_data("Classification"), "--model", "ResNet1D", "--batch_size", "2", "--enable_auto_gradient_accumulation", n_train=45
    )
    assert (exp.plan.steps, exp.plan.mode) == (4, "auto")
    print(exp.describe())
    out = capsys.readouterr().out
    assert "micro-batch 2 x 4 accumulation steps = effective batch 8" in out
    assert "23 micro-batches/epoch -> 6 optimizer updates/epoch (last window: 3 micro-batches, flushed)" in out
