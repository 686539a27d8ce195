"""The accumulation policy alone: windows, normalisers, update counts, state."""

import math

import pytest

from exp.accumulation import AccumulationPolicy, auto_steps, plan_accumulation
from utils.errors import UserError


def run_stream(policy, epochs):
    """All micro-steps of ``epochs`` epochs, as (epoch, batch, position, length, normaliser, update)."""
    out = []
    for _ in range(epochs):
        for _ in range(policy.batches_per_epoch):
            s = policy.next()
            out.append((s.epoch, s.batch, s.position, s.window_length, s.normaliser, s.is_update))
    return out


def sizes(n_samples, batch_size):
    """Per-micro-batch sample counts of an epoch with a short last batch."""
    return [min(batch_size, n_samples - i) for i in range(0, n_samples, batch_size)]


def test_eight_micro_batches_with_two_steps_give_four_updates():
    policy = AccumulationPolicy(2, lambda e: sizes(32, 4), num_epochs=1)
    steps = run_stream(policy, 1)
    assert [s[5] for s in steps] == [False, True] * 4
    assert all(s[4] == 8 for s in steps)  # every window holds 2 x 4 samples
    assert policy.windows_done == 4 == policy.updates_in_epoch(0) == policy.planned_updates()


def test_seven_micro_batches_flush_a_last_window_of_one_weighted_by_its_own_samples():
    policy = AccumulationPolicy(2, lambda e: sizes(26, 4), num_epochs=1)  # 6 x 4 + 1 x 2 samples
    steps = run_stream(policy, 1)
    assert sum(s[5] for s in steps) == 4
    last = steps[-1]
    assert last[3] == 1 and last[5]  # a window of one micro-batch, and an update
    assert last[4] == 2  # divided by the 2 samples it holds, not by 8 or by GA
    assert [s[4] for s in steps[:6]] == [8] * 6


def test_uneven_last_batch_inside_a_full_window():
    policy = AccumulationPolicy(3, lambda e: sizes(10, 4), num_epochs=1)  # batches 4, 4, 2
    steps = run_stream(policy, 1)
    assert [s[4] for s in steps] == [10, 10, 10]  # the window's sample count
    assert [s[5] for s in steps] == [False, False, True]


def test_weights_are_the_class_weight_totals_not_counts():
    weights = [1.5, 0.25, 2.0, 4.0, 0.5]
    policy = AccumulationPolicy(2, lambda e: weights, num_epochs=1)
    assert [s[4] for s in run_stream(policy, 1)] == [1.75, 1.75, 6.0, 6.0, 0.5]


def test_windows_restart_at_each_epoch_by_default():
    policy = AccumulationPolicy(2, lambda e: [1, 1, 1], num_epochs=2)
    steps = run_stream(policy, 2)
    assert [(s[0], s[1], s[2], s[3]) for s in steps] == [
        (0, 0, 0, 2), (0, 1, 1, 2), (0, 2, 0, 1),
        (1, 0, 0, 2), (1, 1, 1, 2), (1, 2, 0, 1),
    ]  # fmt: skip
    assert policy.windows_done == 4 == policy.planned_updates()


def test_cross_epoch_windows_carry_over_and_complete_in_the_next_epoch():
    policy = AccumulationPolicy(2, lambda e: [1, 2, 3], num_epochs=2, cross_epoch=True)
    steps = run_stream(policy, 2)
    assert [(s[0], s[1], s[2]) for s in steps] == [(0, 0, 0), (0, 1, 1), (0, 2, 0), (1, 0, 1), (1, 1, 0), (1, 2, 1)]
    assert [s[4] for s in steps] == [3, 3, 4, 4, 5, 5]  # epoch-0 batch 2 (3) + epoch-1 batch 0 (1)
    assert [policy.updates_in_epoch(e) for e in (0, 1)] == [1, 2]
    assert policy.planned_updates() == 3 == policy.windows_done


def test_cross_epoch_with_epochs_shorter_than_the_window_still_trains():
    policy = AccumulationPolicy(3, lambda e: [5], num_epochs=4, cross_epoch=True)
    steps = run_stream(policy, 4)
    assert [s[5] for s in steps] == [False, False, True, True]  # the last window is flushed
    assert [s[4] for s in steps] == [15, 15, 15, 5]
    assert [policy.updates_in_epoch(e) for e in range(4)] == [0, 0, 1, 1]
    assert policy.planned_updates() == 2


def test_cut_returns_the_correction_for_a_window_stopped_early():
    policy = AccumulationPolicy(4, lambda e: [2, 3], num_epochs=3, cross_epoch=True)
    run_stream(policy, 1)  # two micro-batches of a planned 4-batch window (2+3+2+3 = 10)
    assert policy.pending and policy.normaliser == 10
    assert policy.cut() == pytest.approx(10 / 5)
    assert not policy.pending and policy.cut() == 1.0


def test_state_dict_round_trip_mid_window():
    make = lambda: AccumulationPolicy(3, lambda e: [1, 2, 3, 4, 5], num_epochs=3, cross_epoch=True)  # noqa: E731
    reference = run_stream(make(), 3)
    first = make()
    head = [first.next() for _ in range(7)]  # stop inside a window that crossed an epoch
    assert first.pending
    second = make()
    second.load_state_dict(first.state_dict())
    tail = [second.next() for _ in range(15 - 7)]
    got = [(s.epoch, s.batch, s.position, s.window_length, s.normaliser, s.is_update) for s in head + tail]
    assert got == reference


def test_state_dict_refuses_other_steps_inside_an_epoch_and_accepts_them_at_its_end():
    policy = AccumulationPolicy(2, lambda e: [1] * 4, num_epochs=3)
    policy.next()
    with pytest.raises(ValueError, match="inside an epoch with steps=2"):
        AccumulationPolicy(4, lambda e: [1] * 4, num_epochs=3).load_state_dict(policy.state_dict())
    for _ in range(3):
        policy.next()
    other = AccumulationPolicy(4, lambda e: [1] * 4, num_epochs=3)
    other.load_state_dict(policy.state_dict())  # epoch boundary, no open window: the new steps apply
    assert (other.steps, other.epoch, other.batch) == (4, 1, 0) and other.next().window_length == 4


@pytest.mark.parametrize("batch_size, expected", [(1, 4), (3, 4), (4, 2), (7, 2), (8, 1), (64, 1)])
def test_auto_rule(batch_size, expected):
    assert auto_steps(batch_size) == expected
    plan = plan_accumulation(batch_size, None, auto=True, target=None)
    assert (plan.steps, plan.mode) == (expected, "auto")


def test_default_is_one_step_and_explicit_steps_are_manual():
    assert (plan_accumulation(2, None, False, None).steps, plan_accumulation(2, None, False, None).mode) == (1, "manual")
    assert plan_accumulation(16, 4, False, None, world_size=2).effective_batch_size == 128


@pytest.mark.parametrize("target, batch, world, steps, effective", [
    (32, 4, 1, 8, 32), (32, 4, 2, 4, 32), (32, 4, 4, 2, 32), (32, 4, 3, 3, 36), (8, 8, 1, 1, 8), (33, 4, 2, 5, 40),
])  # fmt: skip
def test_target_batch_size_sets_steps_to_ceil_of_target_over_micro_batch_times_processes(target, batch, world, steps, effective):
    plan = plan_accumulation(batch, None, False, target, world_size=world)
    assert (plan.steps, plan.effective_batch_size, plan.mode) == (steps, effective, "target")
    assert steps == math.ceil(target / (batch * world))
    assert (plan.note() is None) == (effective == target)
    if plan.note():
        assert f"effective batch {effective}, not --target_batch_size {target}" in plan.note()


def test_target_below_one_micro_batch_per_process_is_refused():
    with pytest.raises(UserError, match="--target_batch_size 6 is smaller than one micro-batch per process"):
        plan_accumulation(4, None, False, 6, world_size=2)


@pytest.mark.parametrize("n, k", [(1, 1), (7, 2), (8, 2), (10, 3), (5, 8)])
def test_flush_updates_per_epoch_is_ceil(n, k):
    policy = AccumulationPolicy(k, lambda e: [1] * n, num_epochs=2)
    run_stream(policy, 2)
    assert policy.windows_done == 2 * math.ceil(n / k) == policy.planned_updates()
